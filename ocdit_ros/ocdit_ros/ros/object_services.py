"""The node's object services: ~/list_objects, ~/set_active_objects, ~/add_object, ~/remove_object.

A mixin of `SegmentCore` (ros/node.py): it uses the core's `objects` (id -> ObjectTemplates),
`_lock`, `node_params`, `segmenter` and `templates_dir`. Meshes are rendered the way the model's
training templates were (`Segmenter.template_settings()`).
"""

from __future__ import annotations

from pathlib import Path

from ocdit_msgs.srv import AddObject, ListObjects, RemoveObject, SetActiveObjects
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.parameter import Parameter


class ObjectServices:
    def _create_object_services(self) -> list:
        group = MutuallyExclusiveCallbackGroup()  # object edits one at a time, off the image path
        return [self.create_service(srv_type, name, cb, callback_group=group)
                for srv_type, name, cb in ((ListObjects, "~/list_objects", self._list_objects),
                                           (SetActiveObjects, "~/set_active_objects", self._set_active),
                                           (AddObject, "~/add_object", self._add_object),
                                           (RemoveObject, "~/remove_object", self._remove_object))]

    def _list_objects(self, request, response):
        active = {o.id for o in self.active_objects()}
        with self._lock:
            objs = sorted(self.objects.values(), key=lambda o: o.id)
        response.object_ids = [o.id for o in objs]
        response.names = [o.name for o in objs]
        response.active = [o.id in active for o in objs]
        response.num_templates = [int(len(o.rgb)) for o in objs]
        return response

    def _set_active(self, request, response):
        ids = list(request.object_ids)
        result = self.set_parameters([Parameter("active_objects", Parameter.Type.STRING_ARRAY, ids)])[0]
        response.success, response.message = result.successful, result.reason or "ok"
        response.active_object_ids = [o.id for o in self.active_objects()]
        return response

    def _add_object(self, request, response):
        from ..templates import ArchiveError, MeshError, load_archive, render_or_load
        from ..templates.archive import safe_id

        try:
            if bool(request.mesh_path) == bool(request.templates_path):
                raise ValueError("set exactly one of mesh_path and templates_path")
            if request.mesh_path:
                oid = safe_id(request.object_id or Path(request.mesh_path).stem)
                settings, note = self.segmenter.template_settings().runnable()  # as the model's were rendered
                if note:
                    self.get_logger().warning(note, once=True)
                tpl, hit = render_or_load(request.mesh_path, self.templates_dir, settings, object_id=oid,
                                          units=request.mesh_units or "auto")
            else:
                tpl, hit = load_archive(request.templates_path), True
                if request.object_id:
                    tpl.id = safe_id(request.object_id)
        except (ValueError, MeshError, ArchiveError, OSError) as exc:
            response.success, response.message = False, str(exc)
            return response
        with self._lock:
            replaced = tpl.id in self.objects
            self.objects[tpl.id] = tpl
        response.success, response.object_id, response.cache_hit = True, tpl.id, bool(hit)
        response.num_templates = int(len(tpl.rgb))
        response.message = f"{'replaced' if replaced else 'added'} {tpl.id} ({len(tpl.rgb)} templates)"
        self.get_logger().info(response.message)
        return response

    def _remove_object(self, request, response):
        with self._lock:
            if request.object_id not in self.objects:
                response.success, response.message = False, f"unknown object {request.object_id!r}"
                return response
            del self.objects[request.object_id]
            active = [o for o in (self.node_params.get("active_objects") or []) if o != request.object_id]
        if active != list(self.node_params.get("active_objects") or []):
            self.set_parameters([Parameter("active_objects", Parameter.Type.STRING_ARRAY, active)])
        response.success, response.message = True, f"removed {request.object_id}"
        return response

    def active_objects(self) -> list:
        """The objects segmented now: those named by active_objects, or all when it names none."""
        with self._lock:
            wanted = [o for o in (self.node_params.get("active_objects") or []) if o in self.objects]
            return [self.objects[o] for o in wanted] if wanted else list(self.objects.values())
