"""`ocdit templates render MESH... --out DIR`: render (or reuse cached) template archives."""

from __future__ import annotations

import sys
import time
from pathlib import Path


def add_parser(subparsers):
    p = subparsers.add_parser("templates", help="object templates from CAD meshes")
    sub = p.add_subparsers(dest="templates_command", metavar="ACTION", required=True)
    r = sub.add_parser("render", help="render template archives from meshes",
                       description="Render templates of meshes (OBJ/PLY/GLB or BOP models/ folders).")
    r.add_argument("meshes", nargs="+", help="mesh files or BOP models/ folders (models_info.json, mm)")
    r.add_argument("--out", required=True, help="output folder of <id>.npz + <id>.json archives")
    r.add_argument("--views", type=int, default=42, help="viewpoints (12/42/162 use icosphere vertices)")
    r.add_argument("--size", type=int, default=126,
                   help="template side in px: the model's template size (126 for ViT-S/14 presets; "
                        "the pipeline resizes others)")
    r.add_argument("--units", default="auto", choices=["auto", "m", "cm", "mm"], help="mesh units")
    r.add_argument("--render-size", type=int, default=256, help="side of the full render the crops come from")
    r.add_argument("--renderer", default="raster", choices=["raster", "pybullet"],
                   help="raster: NumPy z-buffer (no extra dependency); pybullet: TinyRenderer (faster, "
                        "what the synthetic scenes and the default model's templates use)")
    return p


def run(args) -> int:
    from .archive import ArchiveError, render_or_load
    from .mesh import MeshError, load_bop_models
    from .render import RenderSettings

    try:
        settings = RenderSettings(views=args.views, template_size=args.size, render_size=args.render_size,
                                  renderer=args.renderer).validate()
    except ValueError as exc:
        print(f"ocdit templates: error: {exc}", file=sys.stderr)
        return 2
    jobs = []
    for item in args.meshes:
        path = Path(item)
        if path.is_dir():
            try:
                for mesh in load_bop_models(path):
                    jobs.append((Path(mesh.source), mesh.name, "mm", mesh))
            except MeshError as exc:
                print(f"ocdit templates: error: {exc}", file=sys.stderr)
                return 2
        else:
            jobs.append((path, None, args.units, None))
    failed = 0
    for i, (path, oid, units, mesh) in enumerate(jobs, 1):
        t0 = time.perf_counter()
        try:
            tpl, hit = render_or_load(path, args.out, settings, object_id=oid, units=units, mesh=mesh)
        except (MeshError, ArchiveError) as exc:
            print(f"[{i}/{len(jobs)}] {path}: error: {exc}", file=sys.stderr)
            failed += 1
            continue
        what = "cached" if hit else f"rendered {len(tpl.rgb)} views"
        print(f"[{i}/{len(jobs)}] {tpl.id}: {what} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 1 if failed else 0
