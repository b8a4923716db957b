#!/usr/bin/env bash
# kiln.exe (the Windows build) under Wine, through its real commands (issue 15). No VM can run
# under Wine, so this covers what needs none, on a store in %LOCALAPPDATA%\kiln (the default
# Windows location): `kiln doctor` names the Windows backends and why not; a COPY-only build
# runs without a VM and stores an image; `kiln save` writes an archive that skopeo and umoci
# (Linux-side, independent) read back with the context's bytes; `kiln run` without QEMU fails
# with one line and exit 125 and leaves no container; and the Windows archive that
# images/package.sh lays out finds its guest image with no environment variables. Called by
# tests/wine-tests.sh with
# WINEPREFIX and the ProcessPrng shim set up.
# Usage: tests/wine-kiln.sh WINE KILN_EXE
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
wine="$1" exe="$2"
unset KILN_GUEST_DIR KILN_GUEST_DIR_X86_64 KILN_GUEST_DIR_ARM64 KILN_ROOT KILN_CACHE_DIR
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
fail() { echo "tests/wine-kiln.sh: FAILED: $*" >&2; exit 1; }
kiln() { timeout 300 "$wine" "$exe" "$@"; }

for tool in skopeo umoci; do
    command -v "$tool" >/dev/null || { echo "tests/wine-kiln.sh: skipped: $tool missing" >&2; [[ ${CI:-} == true ]] && exit 1; exit 0; }
done
# A fresh profile: the store must land in its %LOCALAPPDATA%.
export WINEPREFIX="$work/prefix"

kiln --version | grep -q '^kiln ' || fail "kiln --version"
kiln doctor >"$work/doctor" 2>&1 || fail "kiln doctor exited non-zero: $(cat "$work/doctor")"
grep -q 'store: C:\\users\\.*\\AppData\\Local\\kiln$' "$work/doctor" || fail "the store is not in %LOCALAPPDATA%: $(grep store: "$work/doctor")"
grep -q 'built-in VMM: .*WHPX seam is not implemented yet; use --backend qemu' "$work/doctor" || fail "doctor's built-in VMM line: $(cat "$work/doctor")"
grep -q 'QEMU accelerator: ' "$work/doctor" || fail "doctor has no accelerator line"
grep -q 'shared directories (run -v): not supported on Windows hosts' "$work/doctor" || fail "doctor's shares line"

mkdir -p "$work/ctx/sub"
printf 'FROM scratch\nCOPY hello.txt /hello.txt\nCOPY sub/ /sub/\nLABEL made=wine\n' >"$work/ctx/Dockerfile"
echo "hello from kiln.exe" >"$work/ctx/hello.txt"
echo "nested" >"$work/ctx/sub/a"
kiln build -t wine/img "$work/ctx" >"$work/build" 2>&1 || fail "build: $(cat "$work/build")"
grep -q 'no VM needed' "$work/build" || fail "the COPY-only build wanted a VM: $(cat "$work/build")"
kiln images | grep -q '^wine/img ' || fail "images does not list wine/img"
kiln save -o "$work/img.tar" wine/img || fail "save"
skopeo inspect --config "docker-archive:$work/img.tar" >"$work/config.json" || fail "skopeo cannot read the saved archive"
grep -q '"made": "wine"' "$work/config.json" || fail "the label is not in the config: $(cat "$work/config.json")"
mkdir -p "$work/oci" && tar -xf "$work/img.tar" -C "$work/oci"
umoci unpack --rootless --image "$work/oci:latest" "$work/bundle" >/dev/null 2>&1 ||
    umoci unpack --rootless --image "$work/oci" "$work/bundle" >/dev/null || fail "umoci cannot unpack the saved layout"
[[ $(cat "$work/bundle/rootfs/hello.txt") == "hello from kiln.exe" && $(cat "$work/bundle/rootfs/sub/a") == nested ]] ||
    fail "the unpacked image lacks the context's files"

# An image with a file Windows would read as a device: loadable (it is a fine Linux image),
# but exporting it to this host's files is refused whole, in one line, before anything is written.
python3 - "$work/devname.tar" <<'PY'
import hashlib, io, json, sys, tarfile
def tar_bytes(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in files:
            info = tarfile.TarInfo(name); info.size = len(data); info.mode = 0o644
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()
layer = tar_bytes([("ok.txt", b"fine\n"), ("dev/CON", b"a device on Windows\n")])
diff = "sha256:" + hashlib.sha256(layer).hexdigest()
config = json.dumps({"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": [diff]}}).encode()
cfg = hashlib.sha256(config).hexdigest() + ".json"
manifest = json.dumps([{"Config": cfg, "RepoTags": ["wine/devname:latest"], "Layers": ["layer.tar"]}]).encode()
with open(sys.argv[1], "wb") as f:
    f.write(tar_bytes([("layer.tar", layer), (cfg, config), ("manifest.json", manifest)]))
PY
kiln load -i "$work/devname.tar" >/dev/null 2>"$work/load.err" || fail "load of a plain image failed: $(cat "$work/load.err")"
printf 'FROM wine/devname\nLABEL exported=1\n' >"$work/ctx/Dockerfile.dev"
set +e
kiln build -f "$work/ctx/Dockerfile.dev" -o "type=local,dest=$work/exported" "$work/ctx" >"$work/export.out" 2>"$work/export.err"
rc=$?
set -e
[[ $rc != 0 ]] || fail "exporting a file named CON to Windows files succeeded"
grep -q 'names a Windows device' "$work/export.err" || fail "the refusal does not say why: $(cat "$work/export.err")"
[[ ! -e $work/exported || -z $(ls -A "$work/exported") ]] || fail "the refused export wrote files: $(ls -R "$work/exported")"

set +e
kiln run wine/img true >"$work/run.out" 2>"$work/run.err"
rc=$?
set -e
[[ $rc == 125 ]] || fail "run without QEMU exited $rc, not 125"
[[ $(grep -c . "$work/run.err") == 1 ]] && grep -q 'not found on PATH: install QEMU (winget install' "$work/run.err" ||
    fail "run without QEMU should fail with one line naming winget: $(cat "$work/run.err")"
left="$(kiln ps -a -q)" || fail "kiln ps failed"
[[ -z $left ]] || fail "a failed run left a container: $left"
if [[ -f $repo/images/out/kernel ]]; then
    zip="$(bash "$repo/images/package.sh" windows-x86_64 --kiln "$exe" --out "$work/dist")"
    [[ -f $zip ]] || fail "images/package.sh made no archive"
    mkdir -p "$work/unzipped" && (cd "$work/unzipped" && python3 -m zipfile -e "$zip" .)
    cp "$(dirname "$exe")/bcryptprimitives.dll" "$work/unzipped/kiln-windows-x86_64/bin/"
    timeout 300 "$wine" "$work/unzipped/kiln-windows-x86_64/bin/kiln.exe" doctor >"$work/doctor-pkg" 2>&1 || fail "the packaged kiln.exe doctor failed"
    grep -qE 'guest image: x86_64 guest \(native\): .*kiln-windows-x86_64.bin.*share.kiln.guest.kernel' "$work/doctor-pkg" ||
        fail "the packaged kiln.exe does not find its own guest: $(grep 'guest image' "$work/doctor-pkg")"
else
    echo "tests/wine-kiln.sh: the packaging check needs images/out (images/build.sh)" >&2
    [[ ${CI:-} == true ]] && fail "images/out is missing"
fi
echo "tests/wine-kiln.sh: kiln.exe: doctor, a COPY-only build, save (read by skopeo and umoci), an export refused for a Windows device name, a clean run failure and the packaged archive all work under Wine" >&2
