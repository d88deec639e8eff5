# %pre of offline-events-agent: the service account exists before the files are laid down, so
# /etc/offline-events-agent can be owned by its group. Never removed by the package (see
# post_uninstall.sh).
getent group offline-events-agent >/dev/null || groupadd --system offline-events-agent
getent passwd offline-events-agent >/dev/null \
    || useradd --system --gid offline-events-agent --home-dir /nonexistent --no-create-home \
        --shell /sbin/nologin --comment "offline-events-agent daemon" offline-events-agent
exit 0
