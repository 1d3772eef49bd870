"""Errors a user can act on. The CLI prints their message (no traceback) and exits 2."""


class AfrdError(Exception):
    """Base for every error whose message alone tells the user what to fix."""


class ConfigError(AfrdError):
    """A config file or option is wrong; the message names the file, key path and expectation."""


class DataError(AfrdError):
    """An image set or dataset on disk is missing or unreadable; the message names the file."""


class BundleError(AfrdError):
    """A model bundle is tampered, of an unknown schema, or does not match the cell."""


class DeviceError(AfrdError):
    """A camera or lighting controller failed; the message names the device and the command."""


class FrameTimeout(DeviceError):
    """A camera delivered no frame within the grab timeout. In hardware-trigger mode this is the
    normal idle state (no part arrived), not a fault."""


class RegistrationError(DataError):
    """An image set could not be registered to the product's reference pose (no part found,
    or the match is too weak to trust): the part gets an ``error`` verdict, never a guess."""
