# The kvm bed's job inside the level-1 guest (busybox sh, run by the default init of
# scripts/make-linux-guest.sh after the modules are loaded).  The host runner (bed.py)
# describes the job in the control share "sgctl": token, mounts, links, job.sh.
# Console protocol on ttyS0 (all bed lines carry the run's random token):
#   "sg-bed TOKEN start"        the command starts; everything until the next bed line is its output
#   "sg-bed TOKEN exit N"       it ended with status N
#   "sg-bed TOKEN nokvm WHY"    /dev/kvm is not a usable kvm_amd: the host reports a skip
# ttyS1 carries a heartbeat line every second: its absence means the guest is hung.
C=/sg-bed
mkdir -p $C
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=none sgctl $C || {
    echo "sg-bed: cannot mount the control share"; exit 1; }
token=$(cat $C/token)
say() { echo "sg-bed $token $*" > /dev/ttyS0; }
(while :; do echo hb; sleep 1; done > /dev/ttyS1) &

if [ ! -d /sys/module/kvm_amd ]; then say "nokvm kvm_amd did not load (no SVM in the level-1 CPU?)"; exit 0; fi
if [ -d /sys/module/kvm_pvm ]; then say "nokvm kvm_pvm is loaded"; exit 0; fi
[ -c /dev/kvm ] || { say "nokvm no /dev/kvm"; exit 0; }

# The chroot: a tmpfs root holding the host's top-level symlinks (bin -> usr/bin, ...)
# and the shares mounted at their host paths.  ro shares cache pages (loose); overlay
# shares are read-only 9p below a tmpfs upper layer, so writes succeed and vanish.
R=/bedroot
mkdir -p $R /ov
mount -t tmpfs -o mode=755 tmpfs $R
mount -t tmpfs tmpfs /ov
while read -r name target; do ln -s "$target" "$R/$name"; done < $C/links
# tmpfs first: shares may live below /tmp (the scratch does)
for d in proc sys dev tmp run root var/tmp; do mkdir -p "$R/$d" 2>/dev/null; done
mount -t tmpfs -o mode=1777 tmpfs $R/tmp
mount -t tmpfs -o mode=755 tmpfs $R/run
mount -t tmpfs -o mode=700 tmpfs $R/root
[ -L $R/var ] || mount -t tmpfs -o mode=755 tmpfs $R/var && mkdir -p -m 1777 $R/var/tmp
o9p="trans=virtio,version=9p2000.L,msize=262144"
while read -r tag mode path; do
    mkdir -p "$R$path" 2>/dev/null
    case $mode in
        ro) mount -t 9p -o "$o9p,cache=loose,ro" "$tag" "$R$path" ;;
        rw) mount -t 9p -o "$o9p,cache=mmap" "$tag" "$R$path" ;;
        ov) mkdir -p /ov/$tag/lower /ov/$tag/upper /ov/$tag/work
            mount -t 9p -o "$o9p,cache=loose,ro" "$tag" /ov/$tag/lower &&
            mount -t overlay -o "lowerdir=/ov/$tag/lower,upperdir=/ov/$tag/upper,workdir=/ov/$tag/work" \
                overlay "$R$path" ;;
    esac || { echo "sg-bed: mounting $tag at $path failed" > /dev/ttyS0; say "exit 125"; exit 0; }
done < $C/mounts
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -o bind /dev $R/dev
mount -o bind /dev/pts $R/dev/pts
mount -o bind /dev/shm $R/dev/shm
mkdir -p $R/run/sg-bed && mount -o bind $C $R/run/sg-bed

# Output raw (no \r added), stdin closed.
stty -F /dev/ttyS0 -opost 2>/dev/null
say start
chroot $R /bin/sh /run/sg-bed/job.sh < /dev/null > /dev/ttyS0 2>&1
st=$?
echo $st > $C/status
sync
say "exit $st"
