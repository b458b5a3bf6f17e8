SUMMARY = "RAUC update bundle of the roadedge cabinet image"
DESCRIPTION = "A signed verity-format RAUC bundle carrying the root filesystem of roadedge-image, \
installed into the inactive slot by the RAUC service (roadedge's OTA service drives it over D-Bus)."
HOMEPAGE = "https://example.invalid/roadedge"
LICENSE = "MIT"
# Nothing to fetch: the bundle is made from the image's root filesystem.
SRC_URI = ""

inherit bundle

# The device's system.conf carries the same string (both from conf/distro/roadedge.conf).
RAUC_BUNDLE_COMPATIBLE = "${ROADEDGE_RAUC_COMPATIBLE}"
RAUC_BUNDLE_VERSION = "${DISTRO_VERSION}"
RAUC_BUNDLE_DESCRIPTION = "roadedge cabinet root filesystem"
RAUC_BUNDLE_FORMAT = "verity"
RAUC_BUNDLE_SLOTS = "rootfs"
RAUC_SLOT_rootfs = "roadedge-image"
RAUC_SLOT_rootfs[fstype] = "ext4"
# RAUC_KEY_FILE and RAUC_CERT_FILE (the signing key and its certificate, issued by the CA in
# RAUC_KEYRING_FILE) come from the build configuration, never from this layer.
