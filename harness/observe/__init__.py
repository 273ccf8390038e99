"""Watching sessions from the server's side: kernel socket table, process exits."""
