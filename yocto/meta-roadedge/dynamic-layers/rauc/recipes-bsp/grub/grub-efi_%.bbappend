# Only for the roadedge distro. The initial GRUB environment of the cabinet image: try slot A, then B; both known good. RAUC's
# grub backend rewrites it (ORDER, <slot>_OK, <slot>_TRY) when it installs or marks a slot.
do_deploy:append:roadedge() {
    rm -f ${DEPLOYDIR}/grubenv
    grub-editenv ${DEPLOYDIR}/grubenv create
    grub-editenv ${DEPLOYDIR}/grubenv set ORDER="A B" A_OK=1 A_TRY=0 B_OK=1 B_TRY=0
}
