"""The wave-optics simulator: propagation, brightfield (Abbe), fluorescence PSFs, ground
truth and noise, checked against physics that could fail."""

import numpy as np
import pytest

from napari_mfif import MfifError
from napari_mfif import optics


def _band_limited_field(shape, pixel_size, fmax, seed=0):
    """A random complex field whose spectrum is zero beyond fmax (cycles/um)."""
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(shape[0], pixel_size)[:, None]
    fx = np.fft.fftfreq(shape[1], pixel_size)[None, :]
    spectrum = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    spectrum[fy**2 + fx**2 > fmax**2] = 0
    return np.fft.ifft2(spectrum)


def _gradient_energy(image):
    gy, gx = np.gradient(image.astype(np.float64))
    return float(np.mean(gx**2 + gy**2))


def _phase_bump(shape=(128, 128), pixel_size=0.1, sigma=1.0, height=1.0):
    """phi = height exp(-r^2 / 2 sigma^2) (sigma in um), centred, and its Laplacian (1/um^2)."""
    h, w = shape
    y, x = np.mgrid[:h, :w]
    r2 = ((y - h // 2) ** 2 + (x - w // 2) ** 2) * pixel_size**2
    phi = height * np.exp(-r2 / (2 * sigma**2))
    laplacian = phi * (r2 - 2 * sigma**2) / sigma**4
    return phi, laplacian


# --------------------------------------------------------------------------- propagation


def test_propagation_round_trip_identity_and_energy():
    kw = dict(wavelength=0.55, pixel_size=0.1, medium_index=1.33)
    field = _band_limited_field((64, 64), 0.1, fmax=0.9 * 1.33 / 0.55)
    there = optics.propagate(field, 3.0, **kw)
    assert not np.allclose(there, field, atol=1e-3)          # it did something
    back = optics.propagate(there, -3.0, **kw)
    np.testing.assert_allclose(back, field, atol=1e-12 * np.abs(field).max())
    np.testing.assert_allclose(optics.propagate(field, 0.0, **kw), field,
                               atol=1e-12 * np.abs(field).max())
    energy = np.sum(np.abs(field) ** 2)
    assert np.sum(np.abs(there) ** 2) == pytest.approx(energy, rel=1e-10)


def test_propagation_removes_evanescent_waves_only():
    # n / lambda = 1.8 cycles/um, Nyquist 5: most of a white spectrum is evanescent
    kw = dict(wavelength=0.55, pixel_size=0.1, medium_index=1.0)
    field = _band_limited_field((64, 64), 0.1, fmax=5.0 * 2**0.5, seed=1)
    propagating = optics.propagate(field, 0.0, **kw)          # the evanescent cut alone
    assert np.sum(np.abs(propagating) ** 2) < 0.5 * np.sum(np.abs(field) ** 2)
    far = optics.propagate(field, 5.0, **kw)
    assert np.sum(np.abs(far) ** 2) == pytest.approx(np.sum(np.abs(propagating) ** 2), rel=1e-10)


# --------------------------------------------------------------------------- brightfield


def test_pure_phase_object_invisible_in_focus_visible_defocused():
    phi, _ = _phase_bump()
    t = np.exp(1j * phi)          # its spectrum is far inside the pupil (0.9 / 0.55 um^-1)
    images = optics.brightfield_image(t, [0.0, 2.0, -2.0], pixel_size=0.1, na=0.9,
                                      condenser_na=0.0)
    assert np.abs(images[0] - 1).max() < 2e-6
    for defocused in images[1:]:
        assert defocused.max() - defocused.min() > 0.05


def test_transport_of_intensity_sign():
    # TIE: dI/dz = -(lambda / 2 pi n) laplacian(phi) for I = 1. A positive phase bump (more
    # optical path at the centre, a converging lens) turns bright at its centre downstream
    # (+dz, focal plane above the specimen) and dark upstream.
    phi, laplacian = _phase_bump(height=0.3)
    lam, dz = 0.55, 0.1
    images = optics.brightfield_image(np.exp(1j * phi), [dz, -dz], pixel_size=0.1, na=0.9,
                                      condenser_na=0.0, wavelength=lam)
    c = (64, 64)
    assert images[0][c] > 1.002 and images[1][c] < 0.998
    measured = (images[0] - images[1]) / (2 * dz)
    predicted = -lam / (2 * np.pi) * laplacian
    assert np.corrcoef(measured.ravel(), predicted.ravel())[0, 1] > 0.99
    assert measured[c] == pytest.approx(predicted[c], rel=0.05)


@pytest.fixture(scope="module")
def red_cells():
    """Weakly absorbing phase cells (red-cell-like), nothing else."""
    return optics.specimen((128, 128), cells="rbc", n_cells=3, n_granules=0, n_fibres=0,
                           phase=1.5, absorption=0.05, seed=4)


def test_defocus_fringes_beat_the_in_focus_plane(red_cells):
    defocus = [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0]
    images = optics.brightfield_image(red_cells.transmittance, defocus)
    energy = [_gradient_energy(im) for im in images]
    contrast = [float(np.std(im)) for im in images]
    in_focus = energy[3]
    # the rings carry more gradient energy and more contrast than focus: a contrast focus
    # measure would pick a defocused plane
    assert max(energy) > 2 * in_focus and int(np.argmax(energy)) != 3
    assert max(contrast) > 1.3 * contrast[3] and int(np.argmax(contrast)) != 3


def test_a_wider_condenser_damps_the_fringes(red_cells):
    kw = dict(source_rings=3)
    narrow = optics.brightfield_image(red_cells.transmittance, 3.0, condenser_na=0.1, **kw)
    wide = optics.brightfield_image(red_cells.transmittance, 3.0, condenser_na=0.6, **kw)
    assert np.std(wide) < 0.7 * np.std(narrow)
    assert _gradient_energy(wide) < 0.5 * _gradient_energy(narrow)
    # the in-focus absorption image is there with either condenser (clear glass = 1)
    for cna in (0.1, 0.6):
        focus = optics.brightfield_image(red_cells.transmittance, 0.0, condenser_na=cna, **kw)
        assert np.median(focus) == pytest.approx(1.0, abs=0.02)


def test_clear_glass_is_one_unless_the_condenser_overfills_the_pupil():
    glass = np.ones((32, 32), np.complex64)
    assert np.allclose(optics.brightfield_image(glass, 1.0, na=0.5, condenser_na=0.4), 1, atol=1e-6)
    dark = optics.brightfield_image(glass, 1.0, na=0.5, condenser_na=0.9, pixel_size=0.1)
    assert 0.2 < dark.mean() < 0.5 and np.allclose(dark, dark.mean(), atol=1e-6)


# --------------------------------------------------------------------------- fluorescence PSF


def test_psf_sums_to_one_and_has_the_airy_ring():
    lam, na, px = 0.5, 0.5, 0.05
    p = optics.psf((256, 256), 0.0, wavelength=lam, na=na, pixel_size=px)
    assert p.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.unravel_index(np.argmax(p), p.shape) == (128, 128)
    # azimuthal mean profile, first minimum
    y, x = np.mgrid[:256, :256]
    r = np.rint(np.hypot(y - 128, x - 128)).astype(int)
    profile = np.bincount(r.ravel(), p.ravel()) / np.bincount(r.ravel())
    first_dark = next(i for i in range(1, 60)
                      if profile[i] < profile[i - 1] and profile[i] < profile[i + 1])
    airy = 0.61 * lam / na / px    # 12.2 px
    assert abs(first_dark - airy) <= 1.0
    assert profile[first_dark] < 0.01 * profile[0]


def test_defocused_psf_is_wider_and_symmetric_in_defocus():
    dz = [0.0, 0.5, 1.0, 2.0, 3.0]
    kw = dict(wavelength=0.52, na=0.75, pixel_size=0.1)
    psfs = optics.psf((128, 128), dz, **kw)
    y, x = np.mgrid[:128, :128]
    r2 = (y - 64) ** 2 + (x - 64) ** 2
    moments = [float((p * r2).sum()) for p in psfs]
    assert all(b > 1.1 * a for a, b in zip(moments, moments[1:])), moments
    assert np.allclose(psfs.sum(axis=(1, 2)), 1, atol=1e-5)
    assert np.allclose(optics.psf((128, 128), -2.0, **kw), psfs[3], atol=1e-7)


# --------------------------------------------------------------------------- fluorescence stacks


def _blobs(shape, centres, radius=3.0):
    y, x = np.mgrid[: shape[0], : shape[1]]
    out = np.zeros(shape)
    for cy, cx in centres:
        out += np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * radius**2))
    return out


def test_fluorescence_conserves_each_slices_light():
    emission = _blobs((64, 64), [(20, 20), (40, 45), (10, 50)])
    s = optics.fluorescence_stack(emission, "smooth", n_slices=5, noise=False,
                                  dtype=np.float32, seed=3)
    totals = s.stack.astype(np.float64).sum(axis=(1, 2))
    np.testing.assert_allclose(totals, s.sharp.astype(np.float64).sum(), rtol=1e-5)
    # and the light moves: slices differ from each other and from the truth
    assert np.abs(s.stack[0] - s.stack[4]).max() > 0.1


def test_out_of_focus_emitters_add_haze():
    shape = (96, 96)
    near = _blobs(shape, [(24, 24)])
    far = _blobs(shape, [(68, 68)], radius=4.0)
    depth = np.zeros(shape, np.float32)
    depth[48:, 48:] = 6.0                      # the far blob is 6 um below slice 0
    kw = dict(n_slices=7, noise=False, dtype=np.float32, pixel_size=0.16)
    alone = optics.fluorescence_stack(near, depth, **kw)
    both = optics.fluorescence_stack(near + far, depth, **kw)
    assert alone.sharp.max() == pytest.approx(both.sharp.max(), rel=1e-3)   # same scale
    gap = (slice(40, 52), slice(40, 52))            # between the blobs: dark in focus
    assert both.sharp[gap].mean() < 0.01
    # out of focus, the far blob lights up the gap in slice 0
    assert both.stack[0][gap].mean() > 3 * alone.stack[0][gap].mean() + 0.01
    # in the far blob's own focus (slice 6) that light is concentrated again
    assert both.stack[6][68, 68] > 3 * both.stack[0][68, 68]


# --------------------------------------------------------------------------- ground truth


@pytest.mark.parametrize("render", [optics.brightfield_stack, optics.fluorescence_stack])
def test_the_slice_at_a_flat_specimens_depth_is_the_truth(render):
    s = render(depth=2, n_slices=4, shape=(64, 64), noise=False, dtype=np.float32, seed=5)
    np.testing.assert_array_equal(s.stack[2], s.sharp)
    assert np.all(s.depth == 2)
    assert np.abs(s.stack[0] - s.sharp).mean() > 0.01 * np.abs(s.sharp).mean()


def test_brightfield_stack_sees_each_pixel_at_its_own_defocus(red_cells):
    depth = np.full((128, 128), 2.3, np.float32)
    depth[:, 64:] = 0.6
    s = optics.brightfield_stack(red_cells, depth, n_slices=4, spacing=1.5, noise=False,
                                 levels_per_slice=10, dtype=np.float32)
    for k in (0, 3):
        left = optics.brightfield_image(red_cells.transmittance, (k - 2.3) * 1.5)
        right = optics.brightfield_image(red_cells.transmittance, (k - 0.6) * 1.5)
        np.testing.assert_allclose(s.stack[k][:, :64], left[:, :64], atol=1e-5)
        np.testing.assert_allclose(s.stack[k][:, 64:], right[:, 64:], atol=1e-5)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("render", [optics.brightfield_stack, optics.fluorescence_stack])
def test_shapes_dtypes_and_depth(render, dtype):
    extra = {"source_rings": 1} if render is optics.brightfield_stack else {}
    s = render(n_slices=3, shape=(48, 40), dtype=dtype, seed=1, **extra)
    assert s.stack.shape == (3, 48, 40) and s.stack.dtype == dtype
    assert s.sharp.shape == (48, 40) and s.sharp.dtype == dtype
    assert s.depth.dtype == np.float32 and s.depth.shape == (48, 40)
    assert s.depth.min() == pytest.approx(0) and s.depth.max() == pytest.approx(2)
    if dtype != np.float32:       # the data sit inside the integer range, not clipped
        info = np.iinfo(dtype)
        assert 0 < np.percentile(s.stack, 1) and np.percentile(s.stack, 99) < info.max


def test_objects_depth_is_one_depth_per_object():
    sp = optics.specimen((96, 96), n_cells=4, n_granules=3, n_fibres=1, seed=2)
    s = optics.fluorescence_stack(sp, "objects", n_slices=5, noise=False, dtype=np.float32)
    for label in range(1, sp.labels.max() + 1):
        values = s.depth[sp.labels == label]
        if values.size:
            assert np.ptp(values) == 0
    assert len(np.unique(s.depth)) >= 3 and s.depth.min() == 0 and s.depth.max() == 4


def test_seeds_reproduce():
    a = optics.brightfield_stack(shape=(48, 48), n_slices=3, seed=7, source_rings=1)
    b = optics.brightfield_stack(shape=(48, 48), n_slices=3, seed=7, source_rings=1)
    c = optics.brightfield_stack(shape=(48, 48), n_slices=3, seed=8, source_rings=1)
    assert np.array_equal(a.stack, b.stack) and np.array_equal(a.depth, b.depth)
    assert not np.array_equal(a.stack, c.stack)
    f = optics.fluorescence_stack(shape=(48, 48), n_slices=3, seed=7)
    g = optics.fluorescence_stack(shape=(48, 48), n_slices=3, seed=7)
    assert np.array_equal(f.stack, g.stack) and np.array_equal(f.sharp, g.sharp)


def test_specimen_is_phase_only_without_absorption():
    kw = dict(cells="rbc", n_cells=2, n_granules=0, n_fibres=0, phase=1.2, seed=1)
    clear = optics.specimen((128, 128), absorption=0.0, **kw)
    assert np.allclose(np.abs(clear.transmittance), 1, atol=1e-6)
    phase = np.angle(clear.transmittance)
    assert 1.0 < phase.max() <= 1.2 + 1e-5 and phase.min() >= -1e-6
    # biconcave: the rim is thicker than the centre of each cell
    stained = optics.specimen((128, 128), absorption=0.2, **kw)
    transmitted = np.abs(stained.transmittance) ** 2
    assert transmitted.min() == pytest.approx(0.8, abs=0.01)
    assert stained.emission.min() >= 0 and set(np.unique(stained.labels)) == {0, 1, 2}


# --------------------------------------------------------------------------- noise


def test_brightfield_noise_is_poisson_gaussian():
    photons, read = 400.0, 6.0
    s = optics.brightfield_stack(np.ones((128, 128)), 0.0, n_slices=2, photons=photons,
                                 read_noise=read, dtype=np.float32, source_rings=0, seed=3)
    values = s.stack.astype(np.float64)
    assert values.mean() == pytest.approx(1.0, abs=0.002)
    expected = (photons + read**2) / photons**2            # (shot + read) in bright-field units
    assert values.var() == pytest.approx(expected, rel=0.03)
    assert np.all(s.sharp == 1.0)


def test_fluorescence_noise_is_poisson_plus_offset_and_read_noise():
    photons, read, gain, offset, background = 30.0, 2.0, 4.0, 100.0, 5.0
    s = optics.fluorescence_stack(np.ones((128, 128)), 0.0, n_slices=2, photons=photons,
                                  read_noise=read, gain=gain, offset=offset,
                                  background=background, dtype=np.uint16, seed=3)
    values = s.stack.astype(np.float64)
    assert values.mean() == pytest.approx(offset + gain * (photons + background), rel=0.003)
    expected = gain**2 * (photons + background + read**2) + 1 / 12   # + rounding to ADU
    assert values.var() == pytest.approx(expected, rel=0.03)
    assert np.all(s.sharp == offset + gain * photons)      # no haze, no noise in the truth


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("call", [
    lambda: optics.psf(na=1.2),                                       # NA > n (air)
    lambda: optics.brightfield_image(np.ones((16, 16)), condenser_na=1.1),
    lambda: optics.brightfield_stack(shape=(32, 32), spacing=-1.0),
    lambda: optics.fluorescence_stack(shape=(32, 32), spacing=0),
    lambda: optics.brightfield_stack(shape=(32, 32), dtype=np.int32),
    lambda: optics.fluorescence_stack(shape=(32, 32), n_slices=1),
    lambda: optics.psf(pixel_size=0.5),                               # pupil beyond Nyquist
    lambda: optics.propagate(np.ones(8), 1.0),
    lambda: optics.propagate(np.ones((8, 8)), float("nan")),
    lambda: optics.specimen((32, 32), absorption=1.0),
    lambda: optics.specimen((32, 32), cells="amoeba"),
    lambda: optics.fluorescence_stack(-np.ones((16, 16))),
    lambda: optics.fluorescence_stack(np.ones((16, 16)), np.zeros((8, 8))),
    lambda: optics.brightfield_stack(shape=(32, 32), depth="wavy"),
    lambda: optics.brightfield_stack(optics.specimen((32, 32)), pixel_size=0.1),
    lambda: optics.brightfield_stack(shape=(32, 32), photons=0),
    lambda: optics.brightfield_image(np.ones((16, 16)), source_rings=-1),
])
def test_bad_input_is_one_sentence(call):
    with pytest.raises(MfifError) as err:
        call()
    assert "\n" not in str(err.value)


def test_reflector_is_pads_and_traces_on_a_flat_substrate():
    spec = optics.reflector((128, 128), pixel_size=0.25, seed=4)
    r = np.abs(spec.transmittance) ** 2
    assert spec.transmittance.dtype == np.complex64
    assert 0.3 < np.median(r[spec.labels == 0]) < 0.4
    assert r[spec.labels > 0].mean() > 0.5
    assert 0.05 < (spec.labels > 0).mean() < 0.95
    # heights of at most 0.3 um (plus a faint roughness): phases of at most ~ 4 pi 0.3 / 0.55
    assert np.abs(np.angle(spec.transmittance)).max() <= np.pi


def test_reflected_stack_is_sharpest_at_the_specimen_and_can_miss_it():
    """Flat in the middle by default: that slice is the in-focus truth (noise-free) and the
    slices far from it have lost detail (one slice off, the pads' height turns into fringes
    with more contrast than the focus: phase, as in brightfield); with the specimen below
    the stack, every slice is out of focus and the first is the least defocused."""
    def detail(img):
        return float(np.mean(np.abs(np.diff(img.astype(np.float64), axis=1))))

    s = optics.reflected_stack(shape=(96, 96), n_slices=7, noise=False, dtype=np.float32,
                               seed=2)
    assert np.allclose(s.depth, 3.0)
    assert np.allclose(s.stack[3], s.sharp, atol=1e-5)
    d = [detail(x) for x in s.stack]
    assert d[0] < d[3] and d[6] < d[3] and d[0] < d[1] < d[2] and d[6] < d[5]
    out = optics.reflected_stack(shape=(96, 96), n_slices=5, depth=-2.5, noise=False,
                                 dtype=np.float32, seed=2)
    d = [detail(x) for x in out.stack]
    assert d[0] == max(d) and d[0] > 1.5 * d[-1]
    assert detail(out.sharp) > d[0]
