# %post of offline-events-agent ($1 = 1 on install, 2 on upgrade): make /etc/offline-events-agent
# readable by the service's group only, reload systemd and, on first install, enable the unit
# without starting it (it needs the token and the event set id first). The queue in
# /var/lib/offline-events-agent is never touched.
chown root:offline-events-agent /etc/offline-events-agent
chmod 0750 /etc/offline-events-agent
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ]; then
    systemctl --no-reload enable offline-events-agent.service >/dev/null 2>&1 || :
fi
exit 0
