#!/usr/bin/env python3
"""Writes a single-layer OCI image archive (an OCI image layout in a tar, what `buildah push
oci-archive:` and `ctr images export` produce) from a few files, with nothing but the standard
library: no image builder, no base image, no registry. The node tier uses it for the pause image
and its test image; `ctr images import` loads the result under the name given by --ref.

The output is reproducible: same inputs, same bytes (mtimes 0, owner 0:0, sorted entries).

  oci-archive.py --ref registry.k8s.io/pause:3.10 --out pause.tar \
      --entrypoint /pause --user 65535 --add build/pause:/pause:0755
"""
import argparse
import hashlib
import io
import json
import tarfile


def tar_bytes(entries):
    """entries: list of (path, bytes or None for a directory, mode); returns a tar's bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for path, data, mode in sorted(entries, key=lambda e: e[0]):
            info = tarfile.TarInfo(path)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = mode
            if data is None:
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def blob(data, media_type, blobs):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ref", required=True, help="full image name, e.g. localhost/x:v1")
    ap.add_argument("--out", required=True)
    ap.add_argument("--add", action="append", default=[], metavar="SRC:DST[:MODE]",
                    help="a file into the image (MODE octal, default 0644)")
    ap.add_argument("--entrypoint", action="append", default=[])
    ap.add_argument("--cmd", action="append", default=[])
    ap.add_argument("--user", default="")
    ap.add_argument("--env", action="append", default=["PATH=/"])
    ap.add_argument("--arch", default="amd64")
    args = ap.parse_args()

    entries, dirs = [], set()
    for spec in args.add:
        parts = spec.split(":")
        src, dst = parts[0], parts[1].lstrip("/")
        mode = int(parts[2], 8) if len(parts) > 2 else 0o644
        with open(src, "rb") as f:
            entries.append((dst, f.read(), mode))
        d = dst.rpartition("/")[0]
        while d:
            dirs.add(d)
            d = d.rpartition("/")[0]
    entries += [(d, None, 0o755) for d in dirs]
    layer = tar_bytes(entries)

    blobs = {}
    layer_desc = blob(layer, "application/vnd.oci.image.layer.v1.tar", blobs)
    config = {
        "architecture": args.arch,
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {k: v for k, v in {
            "Entrypoint": args.entrypoint or None,
            "Cmd": args.cmd or None,
            "User": args.user or None,
            "Env": args.env,
        }.items() if v},
        "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "hack/node/oci-archive.py"}],
    }
    config_desc = blob(canonical(config), "application/vnd.oci.image.config.v1+json", blobs)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": [layer_desc],
    }
    manifest_desc = blob(canonical(manifest), "application/vnd.oci.image.manifest.v1+json", blobs)
    # containerd reads the name from io.containerd.image.name; other tools from ref.name.
    manifest_desc["annotations"] = {
        "io.containerd.image.name": args.ref,
        "org.opencontainers.image.ref.name": args.ref,
    }
    manifest_desc["platform"] = {"architecture": args.arch, "os": "linux"}
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [manifest_desc]}

    files = [("oci-layout", canonical({"imageLayoutVersion": "1.0.0"}), 0o644),
             ("index.json", canonical(index), 0o644), ("blobs", None, 0o755),
             ("blobs/sha256", None, 0o755)]
    files += [("blobs/sha256/" + d.split(":", 1)[1], data, 0o644) for d, data in blobs.items()]
    with open(args.out, "wb") as f:
        f.write(tar_bytes(files))
    print(manifest_desc["digest"])


if __name__ == "__main__":
    main()
