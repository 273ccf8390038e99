"""The lab: the network built for one scenario (client, router and server namespaces)."""
