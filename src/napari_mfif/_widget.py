"""The napari widgets: "Fuse focal stack" and "Inspect focus map".

Both are thin: they gather a choice of layers and parameters, run :func:`napari_mfif.fuse`
or :func:`napari_mfif.focus_map` off the UI thread, and hand the result to
:mod:`napari_mfif.layers`, which scripts can call directly. This module is imported by napari
only when a widget is opened, never at plugin discovery; torch is imported only when a method
that needs it runs (or when the CNN is picked, to say whether a GPU is there).

Threading: the worker computes and calls the progress callback, which checks the cancel flag
and emits a Qt signal; everything that touches layers or widgets runs on the main thread.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import napari
from magicgui.widgets import (CheckBox, ComboBox, Container, FloatSpinBox, Label, LineEdit,
                              ProgressBar, PushButton, RadioButtons, Select, SpinBox)
from qtpy.QtCore import QObject, Signal

from . import layers as _layers
from ._errors import FusionCancelled, MfifError
from .registry import DEFAULT_METHOD, MODES, available_methods, get_method

STACK, SLICES = "one stack layer", "2-D layers as slices"

#: the specimen presets of the Fuse widget's simple view: (method, parameters, tooltip). Where
#: a kind of specimen truly needs another method it is named here, not left to raw numbers;
#: the measurements behind each are on the docs' "Which method for my specimen" page.
CUSTOM = "custom (advanced settings)"
PRESETS = {
    "brightfield or fluorescence (default)": (
        DEFAULT_METHOD, {}, "the default: sharpness from the finest detail, which ignores the "
        "bright and dark rings that out-of-focus cells grow in brightfield; right for "
        "fluorescence too"),
    "reflected light (wafers, metal, circuit boards)": (
        "cnn", {"training": "papers"}, "the focus CNN, which takes flat, shiny surfaces from "
        "the plane where they are sharp instead of patches from blurred planes; slower"),
    "photographs (macro, deep subjects)": (
        "laplacian_pyramid", {}, "a Laplacian pyramid, as enfuse blends, for deep subjects "
        "photographed with a camera (insects, minerals): sharp hairs and edges"),
}


class _Relay(QObject):
    """Carries progress from the worker thread to the main thread (queued signal)."""

    progressed = Signal(int, int)


class _Job:
    """One run off the UI thread: a napari progress bar, a Cancel flag, results and errors
    delivered on the main thread. A run cancelled before its result is handled adds
    nothing."""

    def __init__(self, title: str, work: Callable[[Callable[[int, int], None]], Any],
                 on_result: Callable[[Any], None], on_end: Callable[[], None],
                 on_progress: Callable[[int, int], None] | None = None):
        from napari.qt.threading import create_worker
        from napari.utils import progress

        self.title = title
        self.cancel_requested = threading.Event()
        self.steps: list[tuple[int, int]] = []  # progress seen on the main thread
        self._on_result, self._on_end, self._on_progress = on_result, on_end, on_progress
        self._relay = _Relay()
        self._relay.progressed.connect(self._progressed)
        self._pbar = progress(total=0, desc=title)

        def report(done: int, total: int) -> None:  # runs in the worker thread
            if self.cancel_requested.is_set():
                raise FusionCancelled()
            self._relay.progressed.emit(int(done), int(total))

        self.worker = create_worker(
            work, report,
            _connect={"returned": self._returned, "errored": self._errored,
                      "finished": self._finished},
            _start_thread=False,
        )

    def start(self) -> None:
        self.worker.start()

    def cancel(self) -> None:
        self.cancel_requested.set()
        self._pbar.set_description(f"{self.title}: cancelling")

    def _progressed(self, done: int, total: int) -> None:
        self.steps.append((done, total))
        if self._pbar.total != total:
            self._pbar.total = total
        self._pbar.update(done - self._pbar.n)
        if self._on_progress is not None:
            self._on_progress(done, total)

    def _returned(self, result: Any) -> None:
        if self.cancel_requested.is_set():
            self._cancelled()
            return
        try:
            self._on_result(result)
        except MfifError as exc:
            _show_error(f"{self.title}: {exc}")

    def _errored(self, exc: BaseException) -> None:
        if isinstance(exc, FusionCancelled):
            self._cancelled()
        elif isinstance(exc, MfifError):
            _show_error(f"{self.title}: {exc}")
        else:
            first = (str(exc).strip().splitlines() or [""])[0]
            _show_error(f"{self.title} failed: {type(exc).__name__}: {first}")

    def _cancelled(self) -> None:
        from napari.utils.notifications import show_info

        show_info(f"{self.title}: cancelled; no layer was added or changed")

    def _finished(self) -> None:
        self._pbar.close()
        self._on_end()


def _shipped_trainings(arch: str) -> list[str]:
    """The trainings of the focus CNN whose weights ship for ``arch`` (from the files in
    the package, without importing torch)."""
    from pathlib import Path

    folder = Path(__file__).parent / "focus" / "weights"
    found = []
    for training in ("papers", "microscopy", "boundary"):
        name = f"{arch}.pt" if training == "papers" else f"{arch}_{training}.pt"
        if (folder / name).is_file():
            found.append(training)
    return found


def _show_error(message: str) -> None:
    from napari.utils.notifications import show_error

    show_error(message)


class _ParamPanel(Container):
    """The parameters of every registered method, one sub-panel each; only the chosen
    method's panel is shown. Defaults are the method's (the papers' values)."""

    def __init__(self):
        super().__init__(labels=False)
        self._panels: dict[str, Container] = {}
        for name, spec in available_methods().items():
            widgets = [self._widget_for(spec, key, default) for key, default in spec.params.items()]
            panel = Container(widgets=widgets, labels=True, name=f"{name}_params", label="")
            keys = {w.name: w for w in widgets}
            if "arch" in keys and "training" in keys:
                self._link_training(keys["arch"], keys["training"])
            panel.margins = (0, 0, 0, 0)
            self._panels[name] = panel
            self.append(panel)
        self.margins = (0, 0, 0, 0)

    @staticmethod
    def _widget_for(spec, key: str, default: Any):
        tip = spec.param_help.get(key, "")
        choices = spec.param_choices.get(key)
        if key == "arch" and choices is not None:  # only networks whose weights ship
            choices = [c for c in choices if _shipped_trainings(c)] or list(choices)
        if choices is not None:
            return ComboBox(name=key, choices=list(choices), value=default, tooltip=tip)
        if isinstance(default, bool):
            return CheckBox(name=key, value=default, tooltip=tip)
        if isinstance(default, int):
            return SpinBox(name=key, value=default, min=0, max=10_000, tooltip=tip)
        if isinstance(default, float):
            step = 0.01 if default < 1 else 0.5
            return FloatSpinBox(name=key, value=default, min=0.0, max=10_000.0, step=step,
                                tooltip=tip)
        return LineEdit(name=key, value=str(default), tooltip=tip)

    @staticmethod
    def _link_training(arch, training) -> None:
        """Offer only the trainings whose weights ship for the chosen network."""
        def update(value):
            offered = _shipped_trainings(value)
            if offered:
                keep = training.value if training.value in offered else offered[0]
                training.choices = offered
                training.value = keep

        arch.changed.connect(update)
        update(arch.value)

    def reset(self, method: str) -> None:
        """The method's own defaults back in its panel."""
        spec = get_method(method)
        for widget in self._panels[method]:
            if widget.name in spec.params:
                widget.value = spec.params[widget.name]

    def show_method(self, method: str) -> None:
        for name, panel in self._panels.items():
            panel.visible = name == method

    def values(self, method: str) -> dict[str, Any]:
        return {w.name: w.value for w in self._panels[method]}

    def panel(self, method: str) -> Container:
        return self._panels[method]


class _LayerJobWidget(Container):
    """What both widgets share: the input layers, method, device and parameters, a run
    button and a Cancel button."""

    title = ""
    run_text = "Run"

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        self.viewer = viewer
        self.job: _Job | None = None
        self._cuda: str | None | bool = False  # False: not checked yet

        self.source = RadioButtons(
            choices=[STACK, SLICES], value=STACK, label="input", orientation="horizontal",
            tooltip="one layer that holds the whole z-stack (as opened from a multi-page TIFF "
                    "or a microscope file), or several 2-D layers, one per focal plane")
        self.image = ComboBox(choices=self._stack_layers, label="stack layer",
                              tooltip="the image layer that holds the z-stack, grey or colour "
                                      "(results of earlier runs are not listed)")
        self.z_axis = SpinBox(value=0, min=0, max=2, label="z axis",
                              tooltip="which axis of the layer steps through focus: 0 for "
                                      "(z, y, x), as most files have it; set from the file "
                                      "when it names its axes")
        self.time_point = SpinBox(value=0, min=0, max=0, label="time point", visible=False,
                                  tooltip="the layer is a time series: the time point to "
                                          "fuse (the one napari shows when it is chosen)")
        self.slices = Select(choices=self._flat_layers, label="slices",
                             tooltip="two or more 2-D layers, one per focal plane, taken in "
                                     "the order of the layer list (click with Ctrl or Shift "
                                     "to pick several)")
        self.method = ComboBox(choices=list(available_methods()), value=DEFAULT_METHOD,
                               label="method",
                               tooltip="how sharpness is judged and the planes combined; "
                                       f"{DEFAULT_METHOD} suits brightfield and fluorescence "
                                       "(the Methods page of the docs compares them)")
        self.device = ComboBox(choices=["auto", "cpu"], value="auto", label="device",
                               tooltip="where to compute: auto takes the graphics card (GPU) "
                                       "when the method can use one")
        self.device_info = Label(value="", label="")
        self.params = _ParamPanel()
        self.run_button = PushButton(text=self.run_text,
                                     tooltip="start; napari stays usable while it runs")
        self.cancel_button = PushButton(text="Cancel", enabled=False,
                                        tooltip="stop the run; nothing is added or changed")
        self.progress = ProgressBar(value=0, min=0, max=1, label="progress", visible=False,
                                    tooltip="the run's progress")
        self.status = Label(value="")

        self.source.changed.connect(self._source_changed)
        self.image.changed.connect(self._image_changed)
        self.method.changed.connect(self._method_changed)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        events = viewer.layers.events
        for event in (events.inserted, events.removed, events.reordered):
            event.connect(self._layers_changed)

    def _finish_layout(self, extra: list) -> None:
        self.extend([self.source, self.image, self.z_axis, self.time_point, self.slices,
                     *extra, self.method,
                     self.params, self.device, self.device_info, self.run_button,
                     self.cancel_button, self.progress, self.status])
        self._source_changed(self.source.value)
        self._image_changed(self.image.value)
        self._method_changed(self.method.value)

    # -- choices -------------------------------------------------------------------------

    def _image_layers(self):
        """The image layers that can be inputs: not the results of a fusion or focus map."""
        from napari.layers import Image

        return [layer for layer in self.viewer.layers
                if isinstance(layer, Image) and not _layers.is_result(layer)]

    def _stack_layers(self, _widget=None):
        return [(layer.name, layer) for layer in self._image_layers() if layer.ndim >= 3]

    def _flat_layers(self, _widget=None):
        return [(layer.name, layer) for layer in self._image_layers() if layer.ndim == 2]

    def _layers_changed(self, _event=None) -> None:
        self.image.reset_choices()
        self.slices.reset_choices()

    def _image_changed(self, layer) -> None:
        """Take the z axis from the layer's axes where its file named them (our reader
        keeps tifffile's axes letters in the layer's metadata: "YXZ" puts z last)."""
        t_axis = None if layer is None else _layers.time_axis_of(layer)
        self.time_point.visible = t_axis is not None and self.source.value == STACK
        if layer is None:
            return
        axes = (getattr(layer, "metadata", None) or {}).get("napari_mfif", {}).get("axes")
        if isinstance(axes, str):
            axes = axes.replace("S", "") if getattr(layer, "rgb", False) else axes
            if t_axis is not None:  # a time series: z counted among the axes left
                self.time_point.max = int(layer.data.shape[t_axis]) - 1
                step = self.viewer.dims.current_step
                world = self.viewer.dims.ndim - layer.ndim + t_axis
                self.time_point.value = min(int(step[world]) if 0 <= world < len(step)
                                            else 0, self.time_point.max)
                axes = axes.replace("T", "")
            if len(axes) == min(layer.ndim, 3) and "Z" in axes:
                self.z_axis.value = axes.index("Z")

    def _source_changed(self, value: str) -> None:
        stack = value == STACK
        self.image.visible = self.z_axis.visible = stack
        self.slices.visible = not stack
        self.time_point.visible = stack and self.image.value is not None \
            and _layers.time_axis_of(self.image.value) is not None

    def _method_changed(self, method: str) -> None:
        spec = get_method(method)
        self.params.show_method(method)
        if "cuda" not in spec.devices:
            self.device.choices = ["auto", "cpu"]
            self.device_info.value = f"{method} runs on the CPU"
        else:
            self._check_cuda()

    def _check_cuda(self) -> None:
        """Say whether torch sees a GPU, found out off the UI thread (importing torch takes
        a second or two), and offer 'cuda' only when it does."""
        if self._cuda is not False:
            self._show_cuda()
            return
        from napari.qt.threading import create_worker

        from ._device import cuda_name

        self.device_info.value = "looking for a CUDA GPU..."

        def found(name):
            self._cuda = name
            self._show_cuda()

        worker = create_worker(cuda_name, _connect={"returned": found}, _start_thread=False)
        self._cuda_worker = worker
        worker.start()

    def _show_cuda(self) -> None:
        if "cuda" not in get_method(self.method.value).devices:
            return
        if self._cuda:
            self.device.choices = ["auto", "cpu", "cuda"]
            auto = "GPU" if get_method(self.method.value).auto_cuda else "CPU"
            self.device_info.value = f"GPU: {self._cuda} (auto: {auto})"
        else:
            self.device.choices = ["auto", "cpu"]
            self.device_info.value = "no CUDA GPU found: runs on the CPU"

    # -- running -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.job is not None

    def selected_input(self) -> Any:
        """The chosen stack layer, or the chosen 2-D layers in layer-list order."""
        if self.source.value == STACK:
            if self.image.value is None:
                raise MfifError("there is no stack layer to use; open a z-stack first, or "
                                "choose 2-D layers as slices")
            return self.image.value
        return list(self.slices.value)

    def _time_point(self, source) -> int | None:
        """The chosen time point of a time-series layer (None for anything else)."""
        if isinstance(source, (list, tuple)) or source is None \
                or _layers.time_axis_of(source) is None:
            return None
        return int(self.time_point.value)

    def run(self, _=None) -> None:
        """Start a run off the UI thread (returns at once; see :attr:`running`)."""
        if self.running:
            return
        try:
            work, on_result = self._prepare()
        except MfifError as exc:
            _show_error(f"{self.title}: {exc}")
            return
        self.job = _Job(self.title, work, on_result, self._ended, self._progressed)
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        self.progress.max, self.progress.value = 1, 0
        self.progress.visible = True
        self.status.value = "running..."
        self.job.start()

    def _progressed(self, done: int, total: int) -> None:
        """The job's progress, shown in the widget's own bar (on the main thread); a step
        that arrives after the run ended is dropped."""
        if total > 0 and self.job is not None:
            self.progress.max = total
            self.progress.value = min(done, total)
            self.status.value = f"running: step {min(done, total)} of {total}"

    def cancel(self, _=None) -> None:
        if self.job is not None:
            self.job.cancel()
            self.status.value = "cancelling..."

    def _ended(self) -> None:
        self.job = None
        self.run_button.enabled = True
        self.cancel_button.enabled = False
        self.progress.visible = False
        self.status.value = ""

    def _prepare(self) -> tuple[Callable, Callable]:  # pragma: no cover - abstract
        raise NotImplementedError


class FuseWidget(_LayerJobWidget):
    """Fuse focal stack: an all-in-focus image, a height map in slices and (when the z step
    is known) in physical units, and optionally each slice's weights and the height map as a
    3-D surface textured with the fused image (the viewer's 2-D/3-D display is left as the
    user set it)."""

    title = "Fuse focal stack"
    run_text = "Fuse"

    def __init__(self, viewer: napari.viewer.Viewer):
        self._setting_preset = False
        super().__init__(viewer)
        self.mode = ComboBox(choices=list(MODES), value="nway", label="mode",
                             tooltip="nway: all planes judged at once, with a height map; "
                                     "series: two at a time, in order, as the method papers "
                                     "do")
        self.z_step = FloatSpinBox(value=0.0, min=0.0, max=1e6, step=0.1, label="z step",
                                   tooltip="the distance between focal planes (in µm when the "
                                           "layer is in µm); 0 takes it from the layer, as "
                                           "read from the file. With it the height map is "
                                           "also given in µm")
        self.add_weights = CheckBox(value=False, text="add each slice's weights (decision maps)",
                                    tooltip="also add, for every plane, how much of each pixel "
                                            "was taken from it (0 to 1)")
        self.align = ComboBox(choices=["off", "translation", "similarity"], value="off",
                              label="align slices",
                              tooltip="register the slices first (stage drift; similarity also "
                                      "corrects focus breathing); the result is cropped to "
                                      "what every slice covers")
        self.apply_to = Select(choices=self._other_stacks, label="apply to",
                               tooltip="other stack layers of the same shape (other channels) "
                                       "fused with this layer's decision, so they stay registered")
        self.surface = CheckBox(
            value=False, text="3-D surface",
            tooltip="also show the height map as a 3-D surface textured with the fused image "
                    "(the layer '<name> surface'). The view stays as it is: switch to 3-D with "
                    "napari's 2D/3D button at the bottom left, and drag to tilt it")
        self.specimen = ComboBox(
            choices=list(PRESETS) + [CUSTOM], value=next(iter(PRESETS)), label="specimen",
            tooltip="the kind of specimen; each picks the method that suits it. "
                    + " ".join(f"{name}: {tip}." for name, (_, _, tip) in PRESETS.items()))
        self.advanced = CheckBox(value=False, text="advanced settings",
                                 tooltip="show the method, its parameters, the mode, the "
                                         "device, alignment and the extra outputs")
        self._finish_layout([self.z_step, self.specimen, self.advanced, self.mode, self.align,
                             self.apply_to, self.add_weights, self.surface])
        self.image.changed.connect(lambda _: self.apply_to.reset_choices())
        self.specimen.changed.connect(self._specimen_changed)
        self.advanced.changed.connect(self._show_advanced)
        self._show_advanced(False)

    #: shown only with "advanced settings" ticked
    _ADVANCED = ("method", "params", "mode", "device", "device_info", "align", "apply_to",
                 "add_weights", "surface")

    def _show_advanced(self, shown: bool) -> None:
        for name in self._ADVANCED:
            getattr(self, name).visible = bool(shown)
        if shown:  # each part's own rules (the chosen method's panel, stack-only options)
            self.params.show_method(self.method.value)
            self._source_changed(self.source.value)

    def _specimen_changed(self, preset: str) -> None:
        if preset not in PRESETS:
            return
        method, params, _ = PRESETS[preset]
        self._setting_preset = True
        try:
            self.method.value = method
            self.params.reset(method)
            panel = self.params.panel(method)
            for key, value in params.items():
                getattr(panel, key).value = value
            self.mode.value = "nway" if "nway" in self.mode.choices else self.mode.choices[0]
        finally:
            self._setting_preset = False

    def _method_changed(self, method: str) -> None:
        super()._method_changed(method)
        if hasattr(self, "mode"):
            self.mode.choices = list(get_method(method).modes)
        if hasattr(self, "specimen") and not self._setting_preset \
                and PRESETS.get(self.specimen.value, (None,))[0] != method:
            self.specimen.value = CUSTOM  # the advanced settings no longer match a preset
        if hasattr(self, "advanced") and not self.advanced.value:
            self.params.visible = False

    def _source_changed(self, value: str) -> None:
        super()._source_changed(value)
        if hasattr(self, "apply_to"):
            self.apply_to.visible = value == STACK and self.advanced.value

    def _other_stacks(self, _widget=None):
        chosen = self.image.value if hasattr(self, "image") else None
        shape = None if chosen is None else chosen.data.shape[:chosen.ndim]
        return [(layer.name, layer) for layer in self._image_layers()
                if layer is not chosen and layer.ndim >= 3
                and layer.data.shape[:layer.ndim] == shape]

    def _layers_changed(self, _event=None) -> None:
        super()._layers_changed()
        if hasattr(self, "apply_to"):
            self.apply_to.reset_choices()

    def _prepare(self):
        from ._api import fuse

        method = self.method.value
        params = self.params.values(method)
        source = self.selected_input()
        z_step = self.z_step.value or None
        if self.source.value == STACK and self.z_axis.value == 0 and source is not None \
                and _layers.time_axis_of(source) is None:
            from .stack import check_z_layout

            check_z_layout(tuple(source.data.shape), "the z axis box")
        stack, geometry, first = _layers._source(source, self.z_axis.value, z_step,
                                                 self._time_point(source))
        limits = None if first.rgb else first.contrast_limits
        mode, device, weights = self.mode.value, self.device.value, self.add_weights.value
        surface = self.surface.value
        align = None if self.align.value == "off" else self.align.value
        others = list(self.apply_to.value) if self.source.value == STACK else []
        z_axis = self.z_axis.value
        other_stacks = [_layers.stack_from_layer(layer, z_axis,
                                                 time_point=self._time_point(layer))[0]
                        for layer in others]
        get_method(method).resolve_params(params)  # bad values are reported before the run

        def work(progress):
            from ._api import apply_fusion

            result = fuse(stack, method=method, mode=mode, device=device, progress=progress,
                          return_weights=weights or bool(others), align=align,
                          z_axis=0 if stack is not None and hasattr(stack, "ndim") else None,
                          **params)
            applied = [apply_fusion(other, result) for other in other_stacks]
            if not weights:
                result.weights = None
            # the mesh is built here, off the UI thread (a slide's texture range takes a while)
            mesh = _layers.surface_layer_data(result, geometry) if surface else None
            return result, applied, mesh

        def on_result(outcome):
            result, applied, mesh = outcome
            data = _layers.result_layer_data(result, geometry, contrast_limits=limits)
            data += [_layers.applied_layer_data(image, layer, result, geometry)
                     for image, layer in zip(applied, others)]
            if mesh is not None:
                data.append(mesh)
            _layers.put_layers(self.viewer, data)
            from napari.utils.notifications import show_info

            show_info(f"{self.title}: fused {geometry.name!r} with {result.method} "
                      f"({result.mode}, {result.device})")

        return work, on_result


class FocusMapWidget(_LayerJobWidget):
    """Inspect focus map: the chosen method's score and decision for two slices, so a user
    can see why a region of the fusion came from one slice or the other."""

    title = "Inspect focus map"
    run_text = "Show focus map"

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(viewer)
        self.slice_a = SpinBox(value=0, min=0, max=100_000, label="slice A")
        self.slice_b = SpinBox(value=1, min=0, max=100_000, label="slice B")
        self._finish_layout([self.slice_a, self.slice_b])

    def _prepare(self):
        from ._api import focus_map

        method = self.method.value
        params = self.params.values(method)
        source = self.selected_input()
        stack, geometry, _ = _layers._source(source, self.z_axis.value, None,
                                             self._time_point(source))
        slice_a, slice_b = self.slice_a.value, self.slice_b.value
        _layers.check_pair(len(stack), slice_a, slice_b)
        get_method(method).resolve_params(params)
        device = self.device.value

        def work(progress):
            a, b = _layers.pick_pair(stack, slice_a, slice_b)  # reads a lazy layer here
            maps = focus_map(a, b, method=method, device=device, **params)
            progress(1, 1)
            return maps

        def on_result(maps):
            _layers.put_layers(self.viewer, _layers.pair_layer_data(maps, geometry, slice_a,
                                                                    slice_b))

        return work, on_result
