"""``service: ssh``: OpenSSH's sshd. ``config`` (options, checked by sshd itself), ``account``
(the per-run account and its key), ``log`` (sshd's log, stamped and read) and ``target``
(the target itself: starting sshd, sessions, in-flight data)."""

from harness.targets.ssh.config import effective_config, find_sshd, require_sshd, sshd_text
from harness.targets.ssh.target import SshTarget

__all__ = ["SshTarget", "effective_config", "find_sshd", "require_sshd", "sshd_text"]
