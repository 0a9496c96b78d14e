"""Object templates from CAD meshes: loading, headless rendering, archives with a cache."""

from .archive import ArchiveError, ObjectTemplates, load_archive, load_template_dir, render_or_load, save_archive
from .mesh import MeshError, ObjectMesh, load_bop_models, load_mesh
from .render import RenderSettings, TemplateViews, render_templates

__all__ = ["ArchiveError", "MeshError", "ObjectMesh", "ObjectTemplates", "RenderSettings", "TemplateViews",
           "load_archive", "load_bop_models", "load_mesh", "load_template_dir", "render_or_load",
           "render_templates", "save_archive"]
