"""align: slice registration checked against synthetic stacks moved by known amounts.

The moved stacks are rendered on a larger scene and then cropped, so every edge pixel is
real content. Sub-pixel shifts are made by a Fourier shift of the mirrored slice (the
exact, band-limited resampling a camera would record), not by spline interpolation, which
would blur the test data itself before the aligner ever sees it.
"""

import numpy as np
import pytest
from scipy import ndimage as ndi

import napari_mfif as mf
from napari_mfif import MfifError
from napari_mfif.align import (
    AlignResult,
    align_stack,
    apply_transforms,
    common_frame,
    estimate_shifts,
    estimate_similarity,
    transforms_from_shifts,
)
from napari_mfif.synthetic import focal_stack

from conftest import psnr

SIZE, MARGIN, Z = 192, 24, 8
RANGE = 4095  # 12-bit data in uint16


def _fourier_shift(image, shift):
    """``image`` moved by ``shift`` (dy, dx) px, band-limited: the mirrored image is
    periodic and smooth, so its Fourier shift has no wrap-around edge."""
    h, w = image.shape
    mirrored = np.block([[image, image[:, ::-1]], [image[::-1], image[::-1, ::-1]]])
    moved = np.fft.ifft2(ndi.fourier_shift(np.fft.fft2(mirrored), shift)).real
    return moved[:h, :w]


def _to_uint16(x):
    return np.clip(np.rint(400 + 3400 * x), 0, 65535).astype(np.uint16)


def _moved_stack(shifts, *, scales=None, noise=0.004, seed=0):
    """A (Z, SIZE, SIZE) uint16 focal stack whose slice k shows the scene moved by
    shifts[k] and magnified by scales[k] about the image centre; also the same stack
    unmoved, and the sharp ground truth (all cropped from one larger render)."""
    big = SIZE + 2 * MARGIN
    s = focal_stack(n_slices=len(shifts), shape=(big, big), blur_per_slice=1.5, noise=noise,
                    dtype=np.float32, seed=seed)
    crop = (slice(MARGIN, MARGIN + SIZE),) * 2
    slices = []
    for k, (shift, sl) in enumerate(zip(shifts, s.stack)):
        if scales is not None:
            m, c = scales[k], (big - 1) / 2
            # output point q shows scene point c + (q - c - shift) / m
            moved = ndi.affine_transform(sl, np.eye(2) / m, offset=c - (c + np.asarray(shift)) / m,
                                         order=3, mode="reflect")
        elif np.allclose(shift, np.round(shift)):
            moved = np.roll(sl, np.round(shift).astype(int), axis=(0, 1))  # exact
        else:
            moved = _fourier_shift(sl, shift)
        slices.append(moved[crop])
    return _to_uint16(np.stack(slices)), _to_uint16(s.stack[(slice(None),) + crop]), \
        _to_uint16(s.sharp[crop])


def _random_shifts(seed, integer):
    rng = np.random.default_rng(seed)
    shifts = rng.uniform(-20, 20, size=(Z, 2))
    shifts[Z // 2] = 0  # the reference (the middle slice) stays put
    return np.round(shifts) if integer else shifts


@pytest.fixture(scope="module", params=["integer", "subpixel"])
def moved(request):
    integer = request.param == "integer"
    shifts = _random_shifts(1 if integer else 2, integer)
    stack, unmoved, sharp = _moved_stack(shifts, seed=3)
    return shifts, stack, unmoved, sharp


def test_shifts_are_found_within_half_a_pixel(moved):
    shifts, stack, _, _ = moved
    est = estimate_shifts(stack)
    err = np.abs(est - shifts)
    assert est.shape == (Z, 2) and est.dtype == np.float64
    assert np.all(est[Z // 2] == 0)
    assert err.max() < 0.5, err.max()
    assert err.mean() < 0.15, err.mean()


def test_aligned_stack_fuses_within_1db_of_the_unmoved_stack(moved):
    shifts, stack, unmoved, sharp = moved
    res = align_stack(stack)
    assert isinstance(res, AlignResult) and res.reference == Z // 2
    assert np.abs(res.shifts - shifts).max() < 0.5
    y0, y1, x0, x1 = res.box
    # crop rule: the reference rows p with 0 <= p + dy_k <= SIZE - 1 for every slice k
    dy, dx = res.shifts[:, 0], res.shifts[:, 1]
    for (lo, hi), d in [((y0, y1), dy), ((x0, x1), dx)]:
        assert lo == np.ceil(max(0, -d.min()) - 1e-3)
        assert hi == np.floor(SIZE - 1 - max(0, d.max()) + 1e-3) + 1
    assert res.stack.shape == (Z, y1 - y0, x1 - x0) and res.stack.dtype == np.float32
    assert res.valid.all()

    truth = sharp[y0:y1, x0:x1]
    aligned = psnr(truth, mf.fuse(res.stack).image, RANGE)
    reference = psnr(truth, mf.fuse(unmoved).image[y0:y1, x0:x1], RANGE)
    misaligned = psnr(truth, mf.fuse(stack).image[y0:y1, x0:x1], RANGE)
    assert reference - aligned < 1.0, (reference, aligned)
    assert aligned > misaligned + 10, (aligned, misaligned)


def test_crop_box_is_the_region_every_slice_covers():
    rng = np.random.default_rng(0)
    stack = rng.random((3, 40, 50)).astype(np.float32)
    shifts = np.array([[-3.0, 2.0], [0.0, 0.0], [5.0, -4.0]])
    aligned, valid, box = apply_transforms(stack, transforms_from_shifts(shifts))
    # slice k covers reference rows p with 0 <= p + dy_k <= 39
    assert box == (3, 40 - 5, 4, 50 - 2)
    assert valid.all() and aligned.dtype == np.float32
    for k, (dy, dx) in enumerate(shifts.astype(int)):  # integer shifts are copied exactly
        np.testing.assert_array_equal(aligned[k], stack[k, 3 + dy:35 + dy, 4 + dx:48 + dx])


def test_pad_frame_keeps_the_whole_frame_and_fills_from_the_nearest_slice():
    rng = np.random.default_rng(1)
    stack = rng.random((3, 40, 50)).astype(np.float32)
    shifts = np.array([[-3.0, 0.0], [0.0, 0.0], [5.0, 0.0]])
    aligned, valid, box = apply_transforms(stack, transforms_from_shifts(shifts), frame="pad")
    assert box == (0, 40, 0, 50) and aligned.shape == stack.shape
    np.testing.assert_array_equal(aligned[1], stack[1])  # the reference is untouched
    assert valid[1].all()
    assert not valid[0, :3].any() and valid[0, 3:].all()       # slice 0 lacks the top rows
    assert not valid[2, -5:].any() and valid[2, :-5].all()     # slice 2 lacks the bottom rows
    # where a slice has no pixels, it shows the nearest slice that has: the reference
    np.testing.assert_array_equal(aligned[0, :3], stack[1, :3])
    np.testing.assert_array_equal(aligned[2, -5:], stack[1, -5:])
    np.testing.assert_array_equal(aligned[2, :-5], stack[2, 5:])


def test_pad_frame_fuses_on_the_whole_frame(moved):
    shifts, stack, _, sharp = moved
    res = align_stack(stack, frame="pad")
    assert res.stack.shape == (Z, SIZE, SIZE) and res.box == (0, SIZE, 0, SIZE)
    assert res.valid[Z // 2].all() and not res.valid.all()
    fused = mf.fuse(res.stack).image
    assert psnr(sharp, fused, RANGE) > 25  # edges come from fewer slices, but no garbage


def test_similarity_recovers_a_one_and_a_half_percent_scale_change():
    shifts = np.array([[0.0, 0.0], [6.3, -4.7]])
    stack, _, _ = _moved_stack(shifts, scales=[1.0, 1.015], seed=5)
    transforms = estimate_similarity(stack, reference=0)
    scale = np.sqrt(np.linalg.det(transforms[1, :2, :2]))
    assert abs(scale - 1.015) < 0.002, scale
    centre = np.array([(SIZE - 1) / 2, (SIZE - 1) / 2, 1.0])
    assert np.abs((transforms[1] @ centre)[:2] - centre[:2] - shifts[1]).max() < 0.5


def test_similarity_follows_focus_breathing_through_the_stack():
    shifts = _random_shifts(7, integer=False)
    scales = 1 + 0.015 * (np.arange(Z) - Z // 2) / (Z - 1)  # 1.5 % from first to last
    stack, _, _ = _moved_stack(shifts, scales=scales, seed=6)
    res = align_stack(stack, mode="similarity")
    assert np.abs(res.scales - scales).max() < 0.002, res.scales - scales
    assert np.abs(res.shifts - shifts).max() < 0.5
    assert np.all(res.rotations == 0)
    assert align_stack(stack).scales.tolist() == [1.0] * Z  # translation keeps the scale
    text = res.report()
    assert "scale 1.0000" in text and len(text.splitlines()) == Z + 1


def test_similarity_with_rotation():
    big = SIZE + 2 * MARGIN
    s = focal_stack(n_slices=2, shape=(big, big), blur_per_slice=1.5, dtype=np.float32, seed=8)
    angle = np.radians(0.8)
    c = np.array([(big - 1) / 2] * 2)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = ndi.affine_transform(s.stack[1], np.linalg.inv(rot), offset=c - np.linalg.inv(rot) @ c,
                                 order=3, mode="reflect")
    stack = _to_uint16(np.stack([s.stack[0], moved])[:, MARGIN:-MARGIN, MARGIN:-MARGIN])
    res = align_stack(stack, mode="similarity", rotation=True, reference=0)
    assert abs(res.rotations[1] - 0.8) < 0.05, res.rotations
    assert abs(res.scales[1] - 1) < 0.002


def test_one_transform_set_for_all_channels():
    shifts = _random_shifts(4, integer=False)
    gray, _, _ = _moved_stack(shifts, seed=9)
    g = gray.astype(np.float32)
    rgb = np.stack([g, 0.5 * g + 100, 4000 - g], axis=-1)
    res = align_stack(rgb)
    assert res.stack.shape[-1] == 3 and res.gray.shape == res.stack.shape[:3]
    np.testing.assert_allclose(res.transforms, align_stack(gray).transforms, atol=0.02)
    # channels stay registered: the warp is linear, so the channels keep their relation
    r, gr, b = np.moveaxis(res.stack, -1, 0)
    assert np.abs(gr - (0.5 * r + 100)).max() < 0.01
    assert np.abs(b - (4000 - r)).max() < 0.01


def test_inputs_are_not_modified_and_float_types_are_kept():
    shifts = _random_shifts(5, integer=False)[:4]
    stack, _, _ = _moved_stack(shifts, seed=10)
    gray = stack.astype(np.float32)
    before, gray_before = stack.copy(), gray.copy()
    res = align_stack(stack, gray, frame="pad")
    np.testing.assert_array_equal(stack, before)
    np.testing.assert_array_equal(gray, gray_before)
    assert res.stack.dtype == np.float32
    assert align_stack(gray.astype(np.float64)).stack.dtype == np.float64
    slices = [stack[0], stack[1, 2:, 3:]]
    copies = [s.copy() for s in slices]
    common_frame(slices, rule="pad")
    for s, c in zip(slices, copies):
        np.testing.assert_array_equal(s, c)


def test_reference_choice_moves_the_frame(moved):
    shifts, stack, _, _ = moved
    first = estimate_shifts(stack, reference=0)
    assert np.all(first[0] == 0)
    assert np.abs(first - (shifts - shifts[0])).max() < 0.5  # a chain of 7 pairs now
    assert 0 <= align_stack(stack, reference="sharpest").reference < Z


def test_max_shift_and_a_flat_slice():
    shifts = _random_shifts(6, integer=True)[:4]
    stack, _, _ = _moved_stack(shifts, seed=11)
    np.testing.assert_allclose(estimate_shifts(stack, max_shift=45), estimate_shifts(stack))
    flat = stack.copy()
    flat[0] = 1000  # nothing to register on: it keeps its neighbour's place
    est = estimate_shifts(flat)  # relative to slice 2, the middle of 4
    np.testing.assert_allclose(est[0], est[1])
    assert np.abs(est[1:] - (shifts[1:] - shifts[2])).max() < 0.5


def test_progress_is_reported_and_can_cancel(moved):
    _, stack, _, _ = moved
    calls = []
    align_stack(stack, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 2 * Z - 1) for i in range(1, 2 * Z)]

    def cancel(done, total):
        if done == 3:
            raise mf.FusionCancelled()

    with pytest.raises(mf.FusionCancelled):
        align_stack(stack, progress=cancel)


def test_common_frame_crop_and_pad_centre_the_slices():
    rng = np.random.default_rng(2)
    slices = [rng.integers(0, 255, size, dtype=np.uint8) for size in [(40, 50), (36, 50), (41, 45)]]
    cropped, valid = common_frame(slices)  # crop is the default
    assert cropped.shape == (3, 36, 45) and cropped.dtype == np.uint8 and valid.all()
    np.testing.assert_array_equal(cropped[0], slices[0][2:38, 2:47])
    np.testing.assert_array_equal(cropped[1], slices[1][0:36, 2:47])
    np.testing.assert_array_equal(cropped[2], slices[2][2:38, 0:45])

    padded, valid = common_frame(slices, rule="pad")
    assert padded.shape == (3, 41, 50)
    np.testing.assert_array_equal(padded[0, 0:40], slices[0])          # (41 - 40) // 2 = 0
    np.testing.assert_array_equal(padded[1, 2:38], slices[1])          # (41 - 36) // 2 = 2
    np.testing.assert_array_equal(padded[2, :, 2:47], slices[2])       # (50 - 45) // 2 = 2
    assert valid[0, :40].all() and not valid[0, 40].any()
    assert valid[2, :, 2:47].all() and not valid[2, :, :2].any()
    # outside a slice: the nearest slice that covers the pixel (slice 0 before slice 2)
    np.testing.assert_array_equal(padded[1, 0:2], slices[0][0:2])
    np.testing.assert_array_equal(padded[2, 2:38, :2], slices[1][:, :2])
    np.testing.assert_array_equal(padded[2, [0, 1, 38, 39], :2], slices[0][[0, 1, 38, 39], :2])
    np.testing.assert_array_equal(padded[0, 40, 2:47], slices[2][40])  # only slice 2 has row 40
    # no slice has row 40 at columns 0-1: each slice's own edge pixel is replicated
    np.testing.assert_array_equal(padded[0, 40, :2], slices[0][39, :2])
    np.testing.assert_array_equal(padded[2, 40, :2], slices[2][40, [0, 0]])

    rgb, _ = common_frame([np.zeros((20, 24, 3)), np.ones((22, 20, 3))], rule="pad")
    assert rgb.shape == (2, 22, 24, 3)


@pytest.mark.parametrize("call, message", [
    (lambda s: align_stack(s, mode="affine"), "unknown alignment 'affine'"),
    (lambda s: align_stack(s, frame="fit"), "unknown frame 'fit'"),
    (lambda s: align_stack(s, reference=9), "reference slice 9 is outside the stack of 4 slices"),
    (lambda s: align_stack(s, reference="best"), "unknown reference 'best'"),
    (lambda s: align_stack(s, breathing="wild", mode="similarity"), "unknown breathing 'wild'"),
    (lambda s: align_stack(s, max_shift=-1), "max_shift must be a number of pixels >= 0"),
    (lambda s: align_stack(s, order=7), "interpolation order must be an integer from 0 to 5"),
    (lambda s: align_stack(s, s[:2]), "the luminance has shape (2, 48, 48)"),
    (lambda s: align_stack(s[:1]), "at least two slices"),
    (lambda s: align_stack(s[:, :12, :12]), "slices of 12 x 12 pixels are too small to register"),
    (lambda s: apply_transforms(s, np.tile(np.eye(3), (3, 1, 1))), "give (4, 3, 3)"),
    (lambda s: apply_transforms(s, transforms_from_shifts([[0, 0], [30, 0], [-30, 0], [0, 0]])),
     "no part of the image is seen by every slice"),
    (lambda s: common_frame([]), "the list of slices is empty"),
    (lambda s: common_frame([s[0], s[1, ..., None]]), "same number of channels"),
    (lambda s: common_frame([s[0], s[1].astype(np.uint16)]), "must have the same dtype"),
    (lambda s: common_frame([s[0], s[1]], rule="stretch"), "unknown rule 'stretch'"),
])
def test_errors_are_one_sentence(call, message):
    stack = np.random.default_rng(3).integers(0, 255, (4, 48, 48), dtype=np.uint8)
    with pytest.raises(MfifError) as info:
        call(stack)
    text = str(info.value)
    assert message in text and "\n" not in text, text


def test_slices_that_drift_out_of_view_are_an_error():
    # each slice moved 0.4 of the image from the last: slice 2 is 0.8 of it from slice 0
    big = np.random.default_rng(4).random((200, 400)).astype(np.float32)
    big = ndi.gaussian_filter(big, 1.5)
    stack = np.stack([big[:, 0:100], big[:, 40:140], big[:, 80:180]])[:, :100]
    with pytest.raises(MfifError, match="more than half the 100 x 100 image"):
        align_stack(stack, reference=0)
