"""Errors as Docker passes them back, for the tests of what the tools print."""

# A CIFS volume whose mount failed: Docker quotes the mount options, password included.
MOUNT_ERROR = (
    "error while mounting volume '/var/lib/docker/volumes/x/_data': failed to mount local volume: "
    "mount //10.0.0.5/share:/var/lib/docker/volumes/x/_data, data: username=svc,password=hunter22: "
    "permission denied"
)
