"""``service: mqtt``: Debian's Mosquitto broker. ``config`` (its mosquitto.conf, checked by
Mosquitto itself) and ``target`` (the broker, MQTT clients as sessions)."""

from harness.targets.mqtt.config import find_mosquitto, require_mosquitto
from harness.targets.mqtt.target import MqttTarget

__all__ = ["MqttTarget", "find_mosquitto", "require_mosquitto"]
