SUMMARY = "roadedge roadside edge appliance"
DESCRIPTION = "GB/T 37987 reader management, GB/T 32960 and JT/T 808 gateways, durable MQTT/TLS uplink."
HOMEPAGE = "https://example.invalid/roadedge"
SECTION = "net"
LICENSE = "Apache-2.0"
CVE_PRODUCT = "roadedge"
LIC_FILES_CHKSUM = "file://Cargo.toml;beginline=7;endline=7;md5=2507bd5f0713f05419cd2f22fa06fe62"

PV = "0.1.0+git"

# The layer sits inside the roadedge repository; builds take the source from this checkout.
# A release build pins SRCREV to the release commit (kas: local_conf_header).
SRC_URI = "git://${ROADEDGE_SRC_DIR};protocol=file;branch=main \
           file://roadedge.yaml \
           file://10-data-partition.conf \
           file://roadedge-tmpfiles.conf \
           "
ROADEDGE_SRC_DIR ?= "${@os.path.abspath(os.path.join(d.getVar('FILE_DIRNAME'), '../../../..'))}"
# Where the service keeps its state and configuration (the distro puts it on the data partition).
ROADEDGE_DATA_DIR ?= "/data"
SRCREV ?= "${AUTOREV}"

inherit cargo cargo-update-recipe-crates systemd useradd

require roadedge-crates.inc

# The cabinet image carries no demo broker.
CARGO_BUILD_FLAGS += "--no-default-features"
# Cargo.toml's release profile strips symbols; here the build system strips and splits -dbg.
export CARGO_PROFILE_RELEASE_STRIP = "none"

SYSTEMD_SERVICE:${PN} = "roadedge.service"
SYSTEMD_AUTO_ENABLE = "enable"

USERADD_PACKAGES = "${PN}"
GROUPADD_PARAM:${PN} = "--system roadedge"
USERADD_PARAM:${PN} = "--system --no-create-home --home-dir ${localstatedir}/lib/roadedge \
                       --shell ${base_sbindir}/nologin --gid roadedge --groups dialout roadedge"

do_install:append() {
    install -d ${D}${systemd_system_unitdir}/roadedge.service.d
    install -m 0644 ${S}/systemd/roadedge.service ${D}${systemd_system_unitdir}/
    # State and configuration live on the data partition (bound over /var/lib/roadedge and
    # /etc/roadedge for the service), so an A/B root filesystem update keeps them.
    sed -e 's#@DATA_DIR@#${ROADEDGE_DATA_DIR}#g' ${UNPACKDIR}/10-data-partition.conf \
        > ${D}${systemd_system_unitdir}/roadedge.service.d/10-data-partition.conf
    chmod 0644 ${D}${systemd_system_unitdir}/roadedge.service.d/10-data-partition.conf
    install -d ${D}${nonarch_libdir}/tmpfiles.d
    sed -e 's#@DATA_DIR@#${ROADEDGE_DATA_DIR}#g' ${UNPACKDIR}/roadedge-tmpfiles.conf \
        > ${D}${nonarch_libdir}/tmpfiles.d/roadedge.conf
    chmod 0644 ${D}${nonarch_libdir}/tmpfiles.d/roadedge.conf

    # The shipped default; the first boot copies it to the data partition (tmpfiles.d).
    install -d -m 0750 ${D}${sysconfdir}/roadedge
    install -m 0640 ${UNPACKDIR}/roadedge.yaml ${D}${sysconfdir}/roadedge/roadedge.yaml
    chown -R root:roadedge ${D}${sysconfdir}/roadedge

    install -d ${D}${docdir}/roadedge
    install -m 0644 ${S}/README.md ${S}/config/roadedge.example.yaml ${D}${docdir}/roadedge/
}

CONFFILES:${PN} = "${sysconfdir}/roadedge/roadedge.yaml"
FILES:${PN} += "${systemd_system_unitdir}/roadedge.service \
                ${systemd_system_unitdir}/roadedge.service.d \
                ${nonarch_libdir}/tmpfiles.d/roadedge.conf \
"
