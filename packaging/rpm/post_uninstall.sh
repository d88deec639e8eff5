# %postun of offline-events-agent ($1 = 0 on erase, 1 on upgrade). RPM has no purge: an erase
# keeps the queue (/var/lib/offline-events-agent) and the account, as Fedora's guidelines ask, so
# undelivered events survive a remove-and-reinstall. To delete them for good:
#   rm -rf /var/lib/offline-events-agent && userdel offline-events-agent
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart offline-events-agent.service >/dev/null 2>&1 || :
    fi
fi
exit 0
