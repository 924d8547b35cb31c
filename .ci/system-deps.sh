#!/usr/bin/env bash
# Debian packages the desktop tests need: a virtual X server with a real system tray (tray smoke test), X
# inspection/screenshot tools, a Secret Service (keyring integration test) and desktop-file-validate.
# Idempotent: installs nothing when every package is already present.
set -euo pipefail

PACKAGES=(
    xvfb                # Xvfb: the virtual X server
    trayer              # a standalone XEmbed system tray the tray icon docks into (bookworm has no stalonetray)
    x11-utils           # xwininfo, xprop: prove the icon window is embedded in the tray
    xdotool             # window search by name/class
    imagemagick         # import: screenshot of the root window
    gnome-keyring       # gnome-keyring-daemon: a real Secret Service
    dbus                # dbus-run-session: a private session bus for it
    dbus-x11            # dbus-launch, used by some keyring set-ups
    libsecret-tools     # secret-tool: inspect the Secret Service by hand
    desktop-file-utils  # desktop-file-validate for the XDG autostart entry
    python3-venv        # the README's venv quick start with Debian's own python3 (.ci/quickstart-debian.sh)
    pipx                # the README's pipx quick start
)

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "system-deps: all ${#PACKAGES[@]} packages present"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

echo "system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
