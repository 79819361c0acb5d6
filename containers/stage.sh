#!/bin/sh
# Stage what only the build host has into the image root: the lwroi source, the
# image-side scripts, a CA bundle, wheelhouses and pretrained weights. Run by the
# %setup section of containers/lwroi.def and containers/lwroi-oci.def, on the
# build host, from where `apptainer build` runs:
#   LWROI_SRC=. EXTRA_CA_BUNDLE= WHEELHOUSE= WEIGHTS_FILE= WEIGHTS_SHA256= \
#       sh containers/stage.sh "$APPTAINER_ROOTFS"
# Everything lands under ROOTFS/opt/lwroi; install.sh (%post) takes it from there.
set -eu
rootfs=$1
src=${LWROI_SRC:-.}
dest="$rootfs/opt/lwroi"
mkdir -p "$dest/src" "$dest/weights" "$dest/torch/hub" "$dest/build-wheelhouse"

for required in lwroi setup.cfg pyproject.toml containers/install.sh containers/selftest.sh; do
    if [ ! -e "$src/$required" ]; then
        echo "LWROI_SRC=$src is not the lwroi source tree: no $src/$required" >&2
        exit 1
    fi
done
for item in lwroi setup.cfg pyproject.toml README.md LICENSE; do
    if [ -e "$src/$item" ]; then cp -R "$src/$item" "$dest/src/"; fi
done
find "$dest/src" -name __pycache__ -prune -exec rm -rf {} +
# install.sh runs once in %post; selftest.sh stays in the image for %test (`apptainer test`).
install -m 0755 "$src/containers/install.sh" "$dest/install.sh"
install -m 0755 "$src/containers/selftest.sh" "$dest/selftest.sh"

if [ -n "${EXTRA_CA_BUNDLE:-}" ]; then
    install -D -m 0644 "$EXTRA_CA_BUNDLE" "$rootfs/usr/local/share/ca-certificates/lwroi-extra-ca.crt"
fi

n=0
for wheels in ${WHEELHOUSE:-}; do
    n=$((n + 1))
    if [ ! -d "$wheels" ]; then echo "WHEELHOUSE: $wheels is not a folder" >&2; exit 1; fi
    # Hard links cost nothing on the same filesystem; copy otherwise.
    cp -al "$wheels" "$dest/build-wheelhouse/$n" 2>/dev/null ||
        { rm -rf "$dest/build-wheelhouse/$n"; cp -a "$wheels" "$dest/build-wheelhouse/$n"; }
done

if [ -n "${WEIGHTS_FILE:-}" ]; then
    name=$(basename "$WEIGHTS_FILE")
    sum=$(sha256sum "$WEIGHTS_FILE" | cut -d' ' -f1)
    if [ -n "${WEIGHTS_SHA256:-}" ] && [ "$sum" != "$WEIGHTS_SHA256" ]; then
        echo "WEIGHTS_FILE $WEIGHTS_FILE has sha256 $sum, WEIGHTS_SHA256 says $WEIGHTS_SHA256" >&2
        exit 1
    fi
    install -m 0644 "$WEIGHTS_FILE" "$dest/weights/$name"
    echo "$sum  $name" >"$dest/weights/SHA256SUMS"
fi
