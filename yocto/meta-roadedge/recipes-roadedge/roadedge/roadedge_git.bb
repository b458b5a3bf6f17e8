SUMMARY = "roadedge roadside edge appliance"
DESCRIPTION = "GB/T 37987 reader management, GB/T 32960 and JT/T 808 gateways, durable MQTT/TLS uplink."
HOMEPAGE = "https://example.invalid/roadedge"
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://Cargo.toml;beginline=7;endline=7;md5=2507bd5f0713f05419cd2f22fa06fe62"

# The layer sits inside the roadedge repository; builds take the source from this checkout.
SRC_URI = "git://${ROADEDGE_SRC_DIR};protocol=file;branch=main \
           file://roadedge.yaml \
          "
ROADEDGE_SRC_DIR ?= "${LAYERDIR_roadedge}/../.."
SRCREV = "${AUTOREV}"
S = "${WORKDIR}/git"

inherit cargo cargo-update-recipe-crates systemd useradd

require roadedge-crates.inc

# The cabinet image carries no demo broker.
CARGO_BUILD_FLAGS += "--no-default-features"

SYSTEMD_SERVICE:${PN} = "roadedge.service"
SYSTEMD_AUTO_ENABLE = "enable"

USERADD_PACKAGES = "${PN}"
GROUPADD_PARAM:${PN} = "--system roadedge"
USERADD_PARAM:${PN} = "--system --no-create-home --home-dir /var/lib/roadedge --shell /sbin/nologin \
                       --gid roadedge --groups dialout roadedge"

do_install:append() {
    install -d ${D}${systemd_system_unitdir}
    install -m 0644 ${S}/systemd/roadedge.service ${D}${systemd_system_unitdir}/
    install -d -m 0750 ${D}${sysconfdir}/roadedge
    install -m 0640 ${WORKDIR}/roadedge.yaml ${D}${sysconfdir}/roadedge/roadedge.yaml
    install -d ${D}${docdir}/roadedge
    install -m 0644 ${S}/README.md ${S}/config/roadedge.example.yaml ${D}${docdir}/roadedge/
}

CONFFILES:${PN} = "${sysconfdir}/roadedge/roadedge.yaml"
FILES:${PN} += "${systemd_system_unitdir}/roadedge.service"
