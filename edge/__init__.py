"""Edge face appliance: camera frames in, identity / age / gender events out over MQTT."""

__version__ = "0.1.0"
