# %preun of offline-events-agent ($1 = 0 on erase, 1 on upgrade): on erase, stop and disable the
# service. On upgrade it keeps running; post_uninstall.sh restarts it with the new binary.
if [ "$1" -eq 0 ]; then
    systemctl --no-reload disable --now offline-events-agent.service >/dev/null 2>&1 || :
fi
exit 0
