SUMMARY = "roadedge cabinet: the appliance daemon with RAUC A/B updates"
DESCRIPTION = "The roadedge daemon, the RAUC update service it talks to over D-Bus, and the \
GRUB environment tool RAUC's grub backend uses to switch slots."
LICENSE = "MIT"

inherit packagegroup

RDEPENDS:${PN} = "grub-editenv rauc roadedge"
