# The cabinet's RAUC platform configuration: two root filesystem slots switched through GRUB's
# environment, bundles checked against the keyring named by RAUC_KEYRING_FILE (kas file).
# Only for the roadedge distro (a layer must not change other builds by being added).
FILESEXTRAPATHS:prepend:roadedge := "${THISDIR}/files:"

do_install:append:roadedge() {
    sed -i -e 's#@COMPATIBLE@#${ROADEDGE_RAUC_COMPATIBLE}#g' \
        -e 's#@DATA_DIR@#${ROADEDGE_DATA_DIR}#g' \
        -e 's#@KEYRING@#${@os.path.basename(d.getVar('RAUC_KEYRING_FILE'))}#g' \
        ${D}${sysconfdir}/rauc/system.conf
}
