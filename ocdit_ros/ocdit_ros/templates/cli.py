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
    r.add_argument("--weights", help="render as this model's training templates were (the settings its weights "
                   "record; default: the shipped model's: 42 views, 48 px, pybullet); the options below override")
    r.add_argument("--views", type=int, help="viewpoints (12/42/162 use icosphere vertices)")
    r.add_argument("--size", type=int,
                   help="template side in px: best the model's template size (the pipeline resizes others)")
    r.add_argument("--units", default="auto", choices=["auto", "m", "cm", "mm"], help="mesh units")
    r.add_argument("--render-size", type=int, help="side of the full render the crops come from")
    r.add_argument("--renderer", choices=["raster", "pybullet"],
                   help="raster: NumPy z-buffer (no extra dependency); pybullet: TinyRenderer (faster, "
                        "what the synthetic scenes and the shipped model's templates use)")
    return p


def run(args) -> int:
    from .archive import ArchiveError, render_or_load
    from .mesh import MeshError, load_bop_models

    try:
        settings, note = _settings(args).resolve_renderer(args.renderer)
    except (ValueError, OSError) as exc:
        print(f"ocdit templates: error: {exc}", file=sys.stderr)
        return 2
    if note:
        print(f"ocdit templates: warning: {note}", file=sys.stderr)
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


def _settings(args):
    """The model's render settings (its weights' record, else the training rule at its template size;
    with the shipped model when --weights is not given), with the options given on top."""
    import dataclasses

    from ..model.weights import config_from_file, template_render_from_file
    from .render import RenderSettings

    if args.weights:
        weights = Path(args.weights)
        if not weights.exists():
            raise ValueError(f"--weights: {weights} does not exist")
    else:
        from ..model.default import NoDefaultModel, default_weights

        try:
            weights = default_weights()[0]
        except NoDefaultModel:  # an install without weights: the training rule at the options' size
            weights = None
    try:
        record = template_render_from_file(weights) if weights else None
        cfg = config_from_file(weights) if weights and not record else None
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for a bad file
        raise ValueError(f"--weights: cannot read {weights}: {exc}") from None
    if record:
        try:
            settings = RenderSettings.from_dict(record)
        except ValueError as exc:
            raise ValueError(f"--weights: {weights} records unusable template render settings ({exc}); "
                             "save the weights again with a valid record, or give other --weights") from None
    else:
        settings = RenderSettings.training(args.size or (cfg.template_pixels[0] if cfg else 126))
    given = {"views": args.views, "template_size": args.size, "renderer": args.renderer,
             # another template size keeps the training rule's render size for it, unless given
             "render_size": args.render_size or (RenderSettings.training(args.size).render_size if args.size else None)}
    return dataclasses.replace(settings, **{k: v for k, v in given.items() if v is not None}).validate()
