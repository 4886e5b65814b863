# The libvirt test guest's workload (make-linux-guest.sh --run): a counter written to the
# first sector of /dev/vda (fsync'd) and to the serial console, five times a second, so a
# revert shows on disk and in RAM (the shell's variable) alike.
n=0
while true; do
  n=$((n+1))
  printf 'count %08d\n' $n | dd of=/dev/vda bs=512 count=1 conv=fsync 2>/dev/null
  echo "tick $n"
  sleep 0.2
done
