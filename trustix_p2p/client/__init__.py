"""The workstation: trust policy, light client, decisions."""
