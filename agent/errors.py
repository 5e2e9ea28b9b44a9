"""The agent's error tree. run_agent.py prints any AgentError as one ``error: ...`` line.

    AgentError
    ├── ConfigError      a bad setting (config file, --set override, command-line value)
    ├── CheckpointError  missing, incompatible or corrupt model weights
    ├── DeviceError      a microphone, camera or accelerator that cannot be used
    ├── StreamError      a media stream or output file that failed (encoder, sink, peer, disk)
    └── InputError       a bad user input file: image (or no face in it), audio, video, coefficients

Every message says what was expected and what was found, and names the file or setting involved.
"""

from __future__ import annotations

__all__ = ["AgentError", "CheckpointError", "ConfigError", "DeviceError", "InputError", "StreamError"]


class AgentError(Exception):
    """Base of every error the agent reports to the user as one line."""


class ConfigError(AgentError):
    """A configuration value is unknown, of the wrong type or out of range."""


class CheckpointError(AgentError):
    """Model weights are missing, incompatible with their config, or corrupt."""


class DeviceError(AgentError):
    """A device (microphone, virtual camera, GPU) is missing or cannot be opened."""


class StreamError(AgentError):
    """A media stream or output could not be produced or delivered."""


class InputError(AgentError):
    """A user-supplied input (image, audio, video or coefficient file) cannot be used."""
