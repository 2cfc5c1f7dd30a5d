"""Tests of the MQTT JSON connector against a real Mosquitto."""
