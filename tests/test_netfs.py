"""The unsafe path closed: an embedded log on a network filesystem is refused with a message naming the gateway."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxsync.sync import netfs
from cxsync.sync.errors import InvalidValue
from cxsync.sync.targets import open_log

MOUNTINFO = r"""22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:35 / /home/me/share rw,relatime shared:20 - nfs4 srv:/export rw,vers=4.2
41 22 0:36 / /mnt/smb\040drive rw,relatime shared:21 - cifs //srv/drive rw
42 22 0:37 / /mnt/ssh rw,nosuid shared:22 - fuse.sshfs me@host:/ rw
43 40 8:2 / /home/me/share/local rw shared:23 - ext4 /dev/sda2 rw
"""


def test_mountinfo_gives_the_filesystem_of_the_longest_mount_point() -> None:
    table = netfs.linux_mounts(MOUNTINFO)
    assert netfs.network_filesystem("/home/me/share/log.db", table) == "nfs4"
    assert netfs.network_filesystem("/mnt/smb drive/x/log.db", table) == "cifs"
    assert netfs.network_filesystem("/mnt/ssh/log.db", table) == "fuse.sshfs"
    assert netfs.network_filesystem("/home/me/share/local/log.db", table) is None  # a local disk mounted inside
    assert netfs.network_filesystem("/home/me/sharedrive/log.db", table) is None  # a prefix is not a parent
    assert netfs.network_filesystem("/var/log.db", table) is None


def test_bsd_mount_output_is_read_too() -> None:
    table = netfs.bsd_mounts("/dev/disk1s1 on / (apfs, local, journaled)\n"
                             "//me@nas/share on /Volumes/share (smbfs, nodev, nosuid, mounted by me)\n")
    assert netfs.network_filesystem("/Volumes/share/log.db", table) == "smbfs"
    assert netfs.network_filesystem("/Users/me/log.db", table) is None


def test_a_sqlite_target_on_a_network_filesystem_is_refused_naming_cxsync_serve(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    share = tmp_path / "share"
    share.mkdir()
    monkeypatch.setattr(netfs, "mounts", lambda: [("/", "ext4"), (str(share.resolve()), "nfs")])
    with pytest.raises(InvalidValue) as info:
        open_log(f"sqlite:{share / 'log.db'}", "acme")
    assert "network filesystem (nfs)" in info.value.title and "cxsync serve" in info.value.hint
    assert not (share / "log.db").exists()
    local = open_log(f"sqlite:{tmp_path / 'log.db'}", "acme")  # the same machine's own disk: fine
    local.close()


def test_gateway_targets_open_the_http_adapter_and_refuse_plain_http_to_other_hosts() -> None:
    from cxsync.sync.http_log import HttpEventLog

    log = open_log("http://127.0.0.1:1", "acme", token="x")
    assert isinstance(log, HttpEventLog)
    log.close()
    with pytest.raises(InvalidValue, match="unencrypted"):
        open_log("http://sync.example.com", "acme", token="x")
