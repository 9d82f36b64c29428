"""Errors the device runtime reports as one clear line (key, problem, fix)."""


class DeviceError(Exception):
    """A user-facing device error: says what went wrong and what to do."""
