"""Real peers for transport tests: OpenSSH's sshd and an ADB device daemon of our own."""
