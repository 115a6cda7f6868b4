"""The application version, recorded with the workflow version in every audit row."""

APP_VERSION = "0.1.0"
