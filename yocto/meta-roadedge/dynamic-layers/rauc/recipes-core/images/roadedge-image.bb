SUMMARY = "roadedge cabinet image"
DESCRIPTION = "A minimal systemd image running the roadedge appliance, updated as a whole through \
RAUC: GPT disk with an EFI system partition, root filesystem slots A and B, and a data partition \
that keeps roadedge's configuration, database and RAUC's slot status across updates."
LICENSE = "MIT"

inherit core-image

IMAGE_INSTALL:append = " packagegroup-roadedge kernel-image"
IMAGE_FSTYPES = "ext4 wic"
WKS_FILE = "roadedge-ab.wks.in"
# GRUB's environment (slot order and boot attempts) on the EFI system partition.
IMAGE_EFI_BOOT_FILES:append = " grubenv;EFI/BOOT/grubenv"
do_image_wic[depends] += "grub-efi:do_deploy"

# Each slot boots its own kernel from its root filesystem.
IMAGE_BOOT_FILES = ""
