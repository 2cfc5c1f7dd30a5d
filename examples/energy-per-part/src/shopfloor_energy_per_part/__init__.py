"""An example third-party Shopfloor app: energy per good part."""
