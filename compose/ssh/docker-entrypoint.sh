#!/bin/sh
# /run is often a fresh tmpfs: sshd refuses to start without /run/sshd.
# SSH_USER=name [SSH_UID=n]: create that account (shell /bin/sh, home /home/name) when it does
# not exist; SSH_AUTHORIZED_KEY: a public key that may log in as it.
# With the default configuration and no host keys yet, make them (the harness mounts its own
# and names them with -f <config>/HostKey; then nothing is generated).
set -eu
mkdir -p /run/sshd
chmod 0755 /run/sshd
if [ -n "${SSH_USER:-}" ] && ! id "$SSH_USER" >/dev/null 2>&1; then
    useradd --create-home --shell /bin/sh ${SSH_UID:+--uid "$SSH_UID"} "$SSH_USER"
    # a locked account (no password, "!") is refused by sshd even with a key
    usermod -p '*' "$SSH_USER"
fi
if [ -n "${SSH_USER:-}" ] && [ -n "${SSH_AUTHORIZED_KEY:-}" ]; then
    home=$(getent passwd "$SSH_USER" | cut -d: -f6)
    mkdir -p "$home/.ssh"
    printf '%s\n' "$SSH_AUTHORIZED_KEY" > "$home/.ssh/authorized_keys"
    chown -R "$SSH_USER" "$home/.ssh"
    chmod 700 "$home/.ssh"
    chmod 600 "$home/.ssh/authorized_keys"
fi
case " $* " in
    *" -f "*) ;;
    *) if [ "${1:-}" = /usr/sbin/sshd ] && ! ls /etc/ssh/ssh_host_*_key >/dev/null 2>&1; then
           ssh-keygen -A >/dev/null
       fi ;;
esac
exec "$@"
