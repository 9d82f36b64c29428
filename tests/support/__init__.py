"""Test and benchmark support: real services (Mosquitto) and shared-data lookup."""
