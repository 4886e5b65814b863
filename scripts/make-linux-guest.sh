#!/usr/bin/env bash
# Builds a small Linux guest (kernel + busybox initramfs) from Debian packages only:
# the kernel and busybox-static are fetched with `apt-get download`, unpacked with
# `dpkg-deb -x`, and the initramfs is written by busybox's own cpio.  No other source.
# The result is cached: the same inputs reuse DIR without touching apt.
# Run with --help for the options; scripts/README.md describes the guest it makes.
set -euo pipefail

prog=make-linux-guest
die() { echo "$prog: $*" >&2; exit 1; }
say() { [ -n "$quiet" ] || echo "$prog: $*" >&2; }

usage() {
    cat <<'EOF'
Usage: scripts/make-linux-guest.sh DIR [options]

Builds DIR/vmlinuz and DIR/initrd.img from Debian packages (apt-get download only).
Re-running with the same inputs reuses DIR (prints "cached").

Options:
  --flavour F          kernel flavour: the real package behind linux-image-F
                       (default amd64; cloud-amd64 is smaller but has no 9p)
  --modules LIST       comma-separated modules to include and load at boot, replacing
                       the default set (virtio_pci,virtio_blk,virtio_net,virtio_console,ext4)
  --add-modules LIST   comma-separated modules added to the set (e.g. kvm_amd,9p,9pnet_virtio)
                       Dependencies (modules.dep) and softdeps are added automatically;
                       modules built into the kernel are accepted and skipped.
  --module-param "MOD ARGS"
                       parameters given to MOD when init loads it, repeatable
                       (e.g. --module-param "kvm_amd nested=1 npt=1"); MOD.ARG=VAL on the
                       kernel command line works too, as with modprobe
  --run FILE           a shell script the default init runs after setup instead of the
                       shell; when it exits init prints "sg-guest: run exited N" and powers off
  --init FILE          replace /init entirely (it may `. /lib/sg-guest/functions.sh` and
                       call sg_setup, sg_ready, sg_shell, sg_poweroff)
  --add SRC[:DEST]     copy a file or directory into the initramfs at DEST (absolute;
                       default /SRC's basename), repeatable
  --ready-marker TEXT  line printed on the console once setup is done
                       (default "sg-guest: ready")
  --compress C         initramfs compression: gzip (default), zstd, xz or none
                       (none boots faster under TCG: nothing to decompress)
  --vmlinux            also write DIR/vmlinux, the uncompressed ELF kernel, which QEMU
                       boots directly (PVH) with -kernel: under TCG that saves the
                       several seconds of emulated decompression
  --cache DIR          where downloaded .deb files are kept (default DIR/.debs)
  --force              rebuild even when DIR is up to date
  -q, --quiet          print nothing but errors
  -h, --help           this text

Output in DIR: vmlinuz, initrd.img, kernel-version, modules.txt (what is loaded, in order),
cmdline (a suggested -append: console=ttyS0), vmlinux with --vmlinux.  Exit status 0 on success, 1 on any error.
EOF
}

[ $# -ge 1 ] || { usage >&2; exit 1; }
case "$1" in -h|--help) usage; exit 0 ;; -*) die "the first argument is the output DIR" ;; esac
out=$1; shift

flavour=amd64
modules="virtio_pci,virtio_blk,virtio_net,virtio_console,ext4"
add_modules=""
params=()
run_file=""
init_file=""
adds=()
marker="sg-guest: ready"
compress=gzip
vmlinux=""
cache=""
force=""
quiet=""
while [ $# -gt 0 ]; do
    case "$1" in
        --flavour) flavour=${2:?}; shift ;;
        --modules) modules=${2?}; shift ;;
        --add-modules) add_modules="$add_modules,${2:?}"; shift ;;
        --module-param) params+=("${2:?}"); shift ;;
        --run) run_file=${2:?}; shift ;;
        --init) init_file=${2:?}; shift ;;
        --add) adds+=("${2:?}"); shift ;;
        --ready-marker) marker=${2:?}; shift ;;
        --compress) compress=${2:?}; shift ;;
        --cache) cache=${2:?}; shift ;;
        --vmlinux) vmlinux=1 ;;
        --force) force=1 ;;
        -q|--quiet) quiet=1 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
    shift
done
case "$compress" in gzip|zstd|xz|none) ;; *) die "--compress: gzip, zstd, xz or none, not '$compress'" ;; esac
[ -z "$run_file" ] || [ -f "$run_file" ] || die "--run $run_file: no such file"
[ -z "$init_file" ] || [ -f "$init_file" ] || die "--init $init_file: no such file"
[ -z "$run_file" ] || [ -z "$init_file" ] || die "--run and --init exclude each other (a custom init runs what it wants)"
for a in "${adds[@]+"${adds[@]}"}"; do
    src=${a%%:*}
    [ -e "$src" ] || die "--add $a: $src does not exist"
    if [ "$src" != "$a" ]; then case "${a#*:}" in /*) ;; *) die "--add $a: DEST must be absolute" ;; esac; fi
done
command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || die "needs apt-get and dpkg-deb (Debian)"

norm() { tr ',' '\n' | tr '-' '_' | sed '/^$/d' | awk '!seen[$0]++'; }
wanted=$(printf '%s,%s' "$modules" "$add_modules" | norm)

# The meta package names the real kernel package (linux-image-6.1.0-N-FLAVOUR).
kpkg=$(apt-cache depends "linux-image-$flavour" 2>/dev/null |
       awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')
[ -n "$kpkg" ] || die "apt knows no linux-image-$flavour (apt-get update? a Debian amd64 system?)"
kver=$(apt-cache policy "$kpkg" | awk '$1 == "Candidate:" { print $2 }')
bbver=$(apt-cache policy busybox-static | awk '$1 == "Candidate:" { print $2 }')
[ -n "$bbver" ] && [ "$bbver" != "(none)" ] || die "apt knows no busybox-static"

mkdir -p "$out"
out=$(cd "$out" && pwd)
[ -n "$cache" ] || cache=$out/.debs
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

# Everything that decides the output goes into the stamp; a match means DIR is current.
hash_inputs() {
    sha256sum "$0" | cut -d' ' -f1
    printf '%s\n' "$kpkg=$kver" "busybox-static=$bbver" "$wanted" "$marker" "$compress" "vmlinux=$vmlinux"
    printf 'param %s\n' "${params[@]+"${params[@]}"}"
    for f in "$run_file" "$init_file"; do [ -z "$f" ] || { echo "file $f"; sha256sum < "$f"; }; done
    for a in "${adds[@]+"${adds[@]}"}"; do
        echo "add $a"
        (cd "${a%%:*}" 2>/dev/null && find . -type f -print0 | sort -z | xargs -0r sha256sum) ||
            sha256sum < "${a%%:*}"
    done
}
stamp=$(hash_inputs | sha256sum | cut -d' ' -f1)

exec 9>"$out/.lock"
flock 9    # two builds of the same DIR (parallel tests) wait for each other
if [ -z "$force" ] && [ -f "$out/.stamp" ] && [ "$(cat "$out/.stamp")" = "$stamp" ] &&
   [ -f "$out/vmlinuz" ] && [ -f "$out/initrd.img" ]; then
    say "cached: $out ($kpkg)"
    exit 0
fi

work=$(mktemp -d "$out/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT

fetch() {  # fetch PKG VERSION -> path of the .deb in the cache
    local pkg=$1 ver=$2 f
    f=$(find "$cache" -maxdepth 1 -name "${pkg}_*.deb" -print | while read -r d; do
            [ "$(dpkg-deb -f "$d" Version)" = "$ver" ] && { echo "$d"; break; }; done)
    if [ -z "$f" ]; then
        say "apt-get download $pkg=$ver"
        # root cannot hand the download to the _apt sandbox user in an arbitrary directory
        (cd "$cache" && apt-get -q -o APT::Sandbox::User="$(id -un)" download "$pkg=$ver" >/dev/null) ||
            die "apt-get download $pkg=$ver failed"
        f=$(find "$cache" -maxdepth 1 -name "${pkg}_*.deb" -print | while read -r d; do
                [ "$(dpkg-deb -f "$d" Version)" = "$ver" ] && { echo "$d"; break; }; done)
    fi
    [ -n "$f" ] || die "$pkg=$ver: no .deb after download"
    echo "$f"
}
kdeb=$(fetch "$kpkg" "$kver")
bdeb=$(fetch busybox-static "$bbver")
dpkg-deb -x "$kdeb" "$work/k"
dpkg-deb -x "$bdeb" "$work/bb"
release=$(ls "$work/k/lib/modules")
[ -n "$release" ] && [ -f "$work/k/boot/vmlinuz-$release" ] || die "$kpkg: no kernel image in the package"
mods=$work/k/lib/modules/$release
bb=$work/bb/bin/busybox
"$bb" depmod -b "$work/k" "$release" || die "depmod failed"

# --- resolve the module set: file for each name, its modules.dep closure, softdeps ----
declare -A file_of=() seen=() optional=()
while read -r path; do
    n=${path##*/}; n=${n%.ko}; file_of[${n//-/_}]=$path
done < <(cut -d: -f1 "$mods/modules.dep")
builtin_has() { sed 's,.*/,,; s,\.ko$,,; s,-,_,g' "$mods/modules.builtin" | grep -qx "$1"; }
alias_of() { awk -v a="$1" '$1 == "alias" { gsub(/-/, "_", $2); if ($2 == a) print $3 }' "$mods/modules.alias" | tr '-' '_'; }
order=()
add_module() {  # add_module NAME OPTIONAL: dependencies first, each once
    local n=$1 opt=$2 f d s
    [ -z "${seen[$n]:-}" ] || return 0
    f=${file_of[$n]:-}
    if [ -z "$f" ]; then
        builtin_has "$n" && { seen[$n]=builtin; return 0; }
        local al; al=$(alias_of "$n")
        if [ -n "$al" ]; then for s in $al; do add_module "$s" "$opt"; done; seen[$n]=alias; return 0; fi
        [ -n "$opt" ] && return 0
        die "module '$n' is neither a module nor built into $release"
    fi
    seen[$n]=1
    for s in $(grep -a -o 'softdep=[[:print:]]*' "$mods/$f" | sed 's/^softdep=//; s/post:.*//; s/pre://g'); do
        add_module "${s//-/_}" 1
    done
    for d in $(awk -v f="$f:" '$1 == f { $1 = ""; print }' "$mods/modules.dep"); do
        d=${d##*/}; d=${d%.ko}; add_module "${d//-/_}" "$opt"
    done
    order+=("$n"); [ -z "$opt" ] || optional[$n]=1
}
for n in $wanted; do add_module "$n" ""; done

# --- the initramfs tree -----------------------------------------------------------------
root=$work/root
mkdir -p "$root"/{bin,sbin,etc/sg-guest,proc,sys,dev,run,tmp,mnt,root,lib/sg-guest,usr/bin,usr/sbin}
cp "$bb" "$root/bin/busybox"
for app in $("$bb" --list-full); do
    [ -e "$root/$app" ] || ln -s /bin/busybox "$root/$app"
done
: > "$root/etc/sg-guest/modules"
for n in "${order[@]+"${order[@]}"}"; do
    f=${file_of[$n]}
    mkdir -p "$root/lib/modules/$release/$(dirname "$f")"
    cp "$mods/$f" "$root/lib/modules/$release/$f"
    args=""
    for p in "${params[@]+"${params[@]}"}"; do
        [ "$(echo "${p%% *}" | tr '-' '_')" = "$n" ] && [ "$p" != "${p#* }" ] && args="$args ${p#* }"
    done
    printf '%s %s%s\n' "${optional[$n]:+?}$n" "/lib/modules/$release/$f" "$args" >> "$root/etc/sg-guest/modules"
done
cp "$mods"/modules.builtin "$mods"/modules.order "$root/lib/modules/$release/" 2>/dev/null || true
"$bb" depmod -b "$root" "$release" 2>/dev/null || true   # so modprobe works inside too
printf '%s\n' "$marker" > "$root/etc/sg-guest/ready-marker"
echo "root:x:0:0:root:/root:/bin/sh" > "$root/etc/passwd"
echo "root:x:0:" > "$root/etc/group"

cat > "$root/lib/sg-guest/functions.sh" <<'EOF'
# Helpers of the snapgate test guest's init (scripts/make-linux-guest.sh).
sg_mount_basic() {
    mount -t proc proc /proc
    mount -t sysfs sysfs /sys
    mount -t devtmpfs devtmpfs /dev 2>/dev/null || mdev -s
    mkdir -p /dev/pts /dev/shm
    mount -t devpts devpts /dev/pts
    mount -t tmpfs tmpfs /dev/shm
    mount -t tmpfs tmpfs /run
    mount -t tmpfs tmpfs /tmp
    [ -d /sys/kernel/debug ] && mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
    hostname sg-guest
    ip link set lo up 2>/dev/null
    return 0
}
# Loads /etc/sg-guest/modules in order ("[?]NAME PATH ARGS", ? = softdep, may fail),
# adding NAME.ARG=VAL words of the kernel command line as modprobe would.
sg_load_modules() {
    local n p a w
    while read -r n p a; do
        local o=${n#\?}
        for w in $(cat /proc/cmdline); do
            case "$w" in "$o".*=*|"$(echo "$o" | tr _ -)".*=*) a="$a ${w#*.}" ;; esac
        done
        if ! insmod "$p" $a 2>/tmp/insmod.err; then
            grep -q 'File exists' /tmp/insmod.err && continue
            [ "$n" != "$o" ] && continue
            echo "sg-guest: insmod $o failed: $(cat /tmp/insmod.err)" > /dev/console
        fi
    done < /etc/sg-guest/modules
    return 0
}
sg_setup() { sg_mount_basic; sg_load_modules; }
sg_ready() { cat /etc/sg-guest/ready-marker > /dev/console; }
# A shell on the console with job control (cttyhack finds the real tty); respawned.
sg_shell() { while true; do setsid cttyhack sh -l; sleep 1; done; }
sg_poweroff() { sync; poweroff -f; }
EOF

if [ -n "$init_file" ]; then
    cp "$init_file" "$root/init"
else
    cat > "$root/init" <<'EOF'
#!/bin/sh
# Default init of the snapgate test guest: mounts, modules, ready marker, then the
# --run script (and power off) or a shell on the console.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
. /lib/sg-guest/functions.sh
sg_setup
sg_ready
if [ -f /etc/sg-guest/run ]; then
    sh /etc/sg-guest/run < /dev/console > /dev/console 2>&1
    echo "sg-guest: run exited $?" > /dev/console
    sg_poweroff
fi
sg_shell
EOF
fi
chmod 755 "$root/init"
[ -z "$run_file" ] || cp "$run_file" "$root/etc/sg-guest/run"
for a in "${adds[@]+"${adds[@]}"}"; do
    src=${a%%:*}; dest=/$(basename "$src")
    [ "$src" = "$a" ] || dest=${a#*:}
    mkdir -p "$root$(dirname "$dest")"
    cp -a "$src" "$root$dest"
done

case "$compress" in
    gzip) zip="gzip -9n" ;; zstd) zip="zstd -q -19" ;; xz) zip="xz --check=crc32 -9" ;; none) zip=cat ;;
esac
command -v "${zip%% *}" >/dev/null || die "--compress $compress: ${zip%% *} is not installed"
(cd "$root" && find . -mindepth 1 | sort | "$bb" cpio -o -H newc -R 0:0 2>/dev/null) | $zip > "$work/initrd.img"

cp "$work/k/boot/vmlinuz-$release" "$work/vmlinuz"
outputs="vmlinuz initrd.img kernel-version modules.txt cmdline"
if [ -n "$vmlinux" ]; then
    # The bzImage carries the kernel ELF as one compressed stream after its setup code:
    # find the stream by its magic and unpack it (as the kernel's extract-vmlinux does).
    for m in 'xz:\xfd7zXZ\x00' 'zstd:\x28\xb5\x2f\xfd' 'gzip:\x1f\x8b\x08'; do
        for off in $(LC_ALL=C grep -obUaP "${m#*:}" "$work/vmlinuz" | cut -d: -f1); do
            tail -c +$((off + 1)) "$work/vmlinuz" | ${m%%:*} -dc 2>/dev/null > "$work/vmlinux" || true
            [ "$(head -c 4 "$work/vmlinux" | od -An -c | tr -d ' ')" = '177ELF' ] && break 2
        done
    done
    [ "$(head -c 4 "$work/vmlinux" | od -An -c | tr -d ' ')" = '177ELF' ] ||
        die "--vmlinux: no compressed ELF kernel found in vmlinuz-$release"
    outputs="$outputs vmlinux"
fi
echo "$release" > "$work/kernel-version"
cut -d' ' -f1 "$root/etc/sg-guest/modules" > "$work/modules.txt"
echo "console=ttyS0" > "$work/cmdline"
for f in $outputs; do mv -f "$work/$f" "$out/$f"; done
echo "$stamp" > "$out/.stamp"
say "built $out: $release, $(grep -c . "$out/modules.txt" || true) modules, initrd $(du -k "$out/initrd.img" | cut -f1) KiB"
