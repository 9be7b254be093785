"""ISO/IEC 19794-2 codec: any valid record round-trips exactly; every malformed one is refused with a
TemplateError naming the field, and nothing else ever escapes `parse`.

The byte layouts below are written out from the standard's tables, independently of the codec.
"""

from __future__ import annotations

import dataclasses
import math
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idguard.biometrics import (
    CaptureDateTime,
    CertificationBlock,
    ExtendedDataArea,
    FingerView,
    FormatVersion,
    Minutia,
    MinutiaeRecord,
    MinutiaType,
    QualityBlock,
    Representation2011,
    TemplateError,
    encode,
    minutiae_arrays,
    parse,
)

PROPERTY = settings(database=None, max_examples=60, deadline=None)


# ---- strategies -----------------------------------------------------------------------------------
@st.composite
def views(
    draw: st.DrawFn, version: FormatVersion, geometry: tuple[int, int, int, int] | None = None
) -> FingerView:
    width, height, xres, yres = geometry or (
        draw(st.integers(1, 0xFFFF)),
        draw(st.integers(1, 0xFFFF)),
        draw(st.integers(1, 0xFFFF)),
        draw(st.integers(1, 0xFFFF)),
    )
    v2005 = version is FormatVersion.V2005
    reported = True if v2005 else draw(st.booleans())
    if v2005:
        quality = st.integers(0, 100)
    elif reported:
        quality = st.one_of(st.integers(0, 100), st.sampled_from([254, 255]))
    else:
        quality = st.just(254)
    minutia = st.builds(
        Minutia,
        type=st.sampled_from(MinutiaType),
        x=st.integers(0, min(width, 1 << 14) - 1),
        y=st.integers(0, min(height, 1 << 14) - 1),
        angle=st.integers(0, 255),
        quality=quality,
    )
    area_limit = 40
    areas = st.lists(
        st.builds(ExtendedDataArea, type_id=st.integers(1, 0xFFFF), data=st.binary(max_size=area_limit)),
        max_size=3,
    )
    representation = None
    if not v2005:
        representation = Representation2011(
            capture_time=draw(
                st.builds(
                    CaptureDateTime,
                    year=st.integers(0, 0xFFFF),
                    month=st.integers(0, 255),
                    day=st.integers(0, 255),
                    hour=st.integers(0, 255),
                    minute=st.integers(0, 255),
                    second=st.integers(0, 255),
                    millisecond=st.integers(0, 0xFFFF),
                )
            ),
            device_technology=draw(st.integers(0, 255)),
            device_vendor=draw(st.integers(0, 0xFFFF)),
            device_type=draw(st.integers(0, 0xFFFF)),
            quality_blocks=tuple(
                draw(
                    st.lists(
                        st.builds(
                            QualityBlock,
                            score=st.one_of(st.integers(0, 100), st.just(255)),
                            vendor_id=st.integers(0, 0xFFFF),
                            algorithm_id=st.integers(0, 0xFFFF),
                        ),
                        max_size=3,
                    )
                )
            ),
            ridge_ending_type=draw(st.integers(0, 1)),
            minutia_quality_reported=reported,
        )
    return FingerView(
        finger_position=draw(st.integers(0, 10)),
        view_number=draw(st.integers(0, 15)),
        impression_type=draw(
            st.sampled_from([0, 1, 2, 3, 8] if v2005 else [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 24, 28, 29])
        ),
        width=width,
        height=height,
        x_resolution=xres,
        y_resolution=yres,
        minutiae=tuple(draw(st.lists(minutia, max_size=30))),
        finger_quality=draw(st.integers(0, 100)) if v2005 else None,
        extended_data=tuple(draw(areas)),
        representation=representation,
    )


@st.composite
def records(draw: st.DrawFn) -> MinutiaeRecord:
    version = draw(st.sampled_from(FormatVersion))
    if version is FormatVersion.V2005:
        geometry = tuple(draw(st.integers(1, 0xFFFF)) for _ in range(4))
        vs = draw(st.lists(views(version, geometry), min_size=1, max_size=3))  # type: ignore[arg-type]
        return MinutiaeRecord(
            views=tuple(vs),
            version=version,
            capture_equipment_compliance=draw(st.integers(0, 15)),
            capture_equipment_id=draw(st.integers(0, 0xFFF)),
        )
    certified = draw(st.booleans())
    vs = draw(st.lists(views(version), min_size=1, max_size=3))
    if certified:
        blocks = st.lists(
            st.builds(CertificationBlock, authority_id=st.integers(0, 0xFFFF), scheme_id=st.integers(0, 255)),
            max_size=2,
        )
        vs = [
            dataclasses.replace(
                v,
                representation=dataclasses.replace(
                    v.representation, certification_blocks=tuple(draw(blocks))
                ),
            )
            for v in vs
            if v.representation is not None
        ]
    return MinutiaeRecord(views=tuple(vs), version=version, certification_flag=certified)


def sample_2005() -> MinutiaeRecord:
    view = FingerView(
        finger_position=2,
        view_number=1,
        impression_type=0,
        width=300,
        height=400,
        x_resolution=197,
        y_resolution=197,
        minutiae=(
            Minutia(MinutiaType.ENDING, 10, 20, 64, 80),
            Minutia(MinutiaType.BIFURCATION, 299, 399, 255, 100),
            Minutia(MinutiaType.OTHER, 0, 0, 0, 0),
        ),
        finger_quality=77,
        extended_data=(ExtendedDataArea(1, b"\x01\x02\x03"),),
    )
    return MinutiaeRecord(views=(view,), capture_equipment_compliance=1, capture_equipment_id=0x123)


def fault(data: bytes) -> TemplateError:
    with pytest.raises(TemplateError) as info:
        parse(data)
    return info.value


def with_length(data: bytes | bytearray) -> bytes:
    """Rewrite the record length field to the actual length, so the fault tested is the one planted."""
    out = bytearray(data)
    out[8:12] = struct.pack(">I", len(out))
    return bytes(out)


# ---- the layout, written out by hand ----------------------------------------------------------------
def test_2005_layout_matches_the_standard() -> None:
    data = encode(sample_2005())
    expected = (
        b"FMR\x00 20\x00"
        + struct.pack(">I", 24 + 4 + 3 * 6 + 2 + 4 + 3)
        + struct.pack(">HHHHHBB", (1 << 12) | 0x123, 300, 400, 197, 197, 1, 0)
        + bytes([2, (1 << 4) | 0, 77, 3])
        + struct.pack(">HHBB", (0b01 << 14) | 10, 20, 64, 80)
        + struct.pack(">HHBB", (0b10 << 14) | 299, 399, 255, 100)
        + struct.pack(">HHBB", 0, 0, 0, 0)
        + struct.pack(">HHH", 4 + 3, 1, 3)
        + b"\x01\x02\x03"
    )
    assert data == expected
    assert parse(expected) == sample_2005()


def test_2011_layout_matches_the_standard() -> None:
    view = FingerView(
        finger_position=7,
        view_number=0,
        impression_type=24,
        width=300,
        height=400,
        x_resolution=197,
        y_resolution=197,
        minutiae=(Minutia(MinutiaType.ENDING, 10, 20, 64, 254),),
        extended_data=(ExtendedDataArea(2, b"xy"),),
        representation=Representation2011(
            quality_blocks=(QualityBlock(50, 1, 2),), minutia_quality_reported=False
        ),
    )
    body = (
        b"\xff\xff" + b"\xff" * 5 + b"\xff\xff"  # capture time not recorded
        + struct.pack(">BHH", 0, 0, 0)
        + struct.pack(">BBHH", 1, 50, 1, 2)
        + struct.pack(">BBHHBHHBB", 7, 0, 197, 197, 24, 300, 400, (5 << 4) | 0, 1)
        + struct.pack(">HHB", (0b01 << 14) | 10, 20, 64)
        + struct.pack(">HHH", 6, 2, 6)  # the 2011 area length counts its 4-byte header
        + b"xy"
    )  # fmt: skip
    representation = struct.pack(">I", 4 + len(body)) + body
    expected = b"FMR\x00030\x00" + struct.pack(">IHB", 15 + len(representation), 1, 0) + representation
    record = MinutiaeRecord(views=(view,), version=FormatVersion.V2011)
    assert encode(record) == expected
    assert parse(expected) == record


# ---- round trip ---------------------------------------------------------------------------------
@PROPERTY
@given(records())
def test_any_valid_record_round_trips_exactly(record: MinutiaeRecord) -> None:
    data = encode(record)
    assert parse(data) == record
    assert encode(parse(data)) == data


@PROPERTY
@given(records(), st.data())
def test_truncated_at_any_offset_is_a_template_error(record: MinutiaeRecord, data: st.DataObject) -> None:
    encoded = encode(record)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    fault(encoded[:cut])
    if cut >= 12:  # also when the length field is made to agree with the shorter record
        fault(with_length(encoded[:cut]))


@PROPERTY
@given(records(), st.data())
def test_corrupted_records_raise_only_template_error(record: MinutiaeRecord, data: st.DataObject) -> None:
    encoded = bytearray(encode(record))
    for _ in range(data.draw(st.integers(1, 4))):
        encoded[data.draw(st.integers(0, len(encoded) - 1))] = data.draw(st.integers(0, 255))
    try:
        parsed = parse(bytes(encoded))
    except TemplateError:
        return
    assert encode(parsed) == bytes(encoded)  # whatever parses is valid and re-encodes identically


def sample_2011() -> MinutiaeRecord:
    view = FingerView(
        finger_position=2,
        view_number=0,
        impression_type=0,
        width=300,
        height=400,
        x_resolution=197,
        y_resolution=197,
        minutiae=(Minutia(MinutiaType.ENDING, 1, 2, 3, 50), Minutia(MinutiaType.BIFURCATION, 4, 5, 6, 255)),
        extended_data=(ExtendedDataArea(0x0101, b"vendor"),),
        representation=Representation2011(
            quality_blocks=(QualityBlock(60, 1, 1),), certification_blocks=(CertificationBlock(1, 2),)
        ),
    )
    return MinutiaeRecord(views=(view, view), version=FormatVersion.V2011, certification_flag=True)


@pytest.mark.parametrize("record", [sample_2005(), sample_2011()], ids=["2005", "2011"])
def test_every_truncation_of_a_record_is_refused(record: MinutiaeRecord) -> None:
    data = encode(record)
    assert parse(data) == record
    for cut in range(len(data)):
        err = fault(data[:cut])
        assert err.field.startswith(("header.", "record_length")), (cut, err)
        if cut >= 12:
            fault(with_length(data[:cut]))  # a consistent length field does not make it valid


# ---- each malformation names its field --------------------------------------------------------
def test_wrong_magic() -> None:
    data = encode(sample_2005())
    assert fault(b"FIR\x00" + data[4:]).field == "header.format_id"


def test_wrong_version() -> None:
    data = encode(sample_2005())
    err = fault(data[:4] + b" 21\x00" + data[8:])
    assert err.field == "header.version"
    assert "2005" in err.detail


@pytest.mark.parametrize("delta", [-1, 1, 1000])
def test_length_mismatch(delta: int) -> None:
    data = bytearray(encode(sample_2005()))
    data[8:12] = struct.pack(">I", len(data) + delta)
    err = fault(bytes(data))
    assert err.field == "record_length"
    assert str(len(data)) in err.detail


def test_trailing_bytes() -> None:
    assert fault(with_length(encode(sample_2005()) + b"\x00")).field == "record_length"


def test_minutia_count_too_low_leaves_bytes_over() -> None:
    data = bytearray(encode(sample_2005()))
    data[27] = 2  # the view header says 2 minutiae; 3 follow
    fault(bytes(data))


def test_minutia_count_too_high_runs_out() -> None:
    data = bytearray(encode(sample_2005()))
    data[27] = 9
    fault(bytes(data))


def test_view_count_too_high() -> None:
    data = bytearray(encode(sample_2005()))
    data[22] = 2
    assert fault(bytes(data)).field.startswith("view[1].")


def test_no_views() -> None:
    data = bytearray(encode(sample_2005())[:24])
    data[22] = 0
    assert fault(with_length(data)).field == "header.view_count"


@pytest.mark.parametrize("position", [11, 12, 255])
def test_bad_finger_position(position: int) -> None:
    data = bytearray(encode(sample_2005()))
    data[24] = position
    err = fault(bytes(data))
    assert err.field == "view[0].finger_position"
    assert str(position) in err.detail


def test_bad_impression_type() -> None:
    data = bytearray(encode(sample_2005()))
    data[25] = (1 << 4) | 5  # 5 is a latent code: 2011 only
    assert fault(bytes(data)).field == "view[0].impression_type"


def test_finger_quality_above_100() -> None:
    data = bytearray(encode(sample_2005()))
    data[26] = 101
    assert fault(bytes(data)).field == "view[0].finger_quality"


def test_reserved_minutia_type() -> None:
    data = bytearray(encode(sample_2005()))
    data[28] |= 0b1100_0000  # type bits 11
    assert fault(bytes(data)).field == "view[0].minutia[0].type"


def test_reserved_bits_above_y() -> None:
    data = bytearray(encode(sample_2005()))
    data[30] |= 0b0100_0000
    assert fault(bytes(data)).field == "view[0].minutia[0].y"


def test_coordinate_outside_the_image() -> None:
    data = bytearray(encode(sample_2005()))
    data[34:36] = struct.pack(">H", (0b10 << 14) | 300)  # x == width
    err = fault(bytes(data))
    assert err.field == "view[0].minutia[1].x"
    assert "300" in err.detail


def test_minutia_quality_above_100() -> None:
    data = bytearray(encode(sample_2005()))
    data[33] = 101
    assert fault(bytes(data)).field == "view[0].minutia[0].quality"


def test_reserved_header_byte() -> None:
    data = bytearray(encode(sample_2005()))
    data[23] = 1
    assert fault(bytes(data)).field == "header.reserved"


def test_extended_area_longer_than_its_block() -> None:
    data = bytearray(encode(sample_2005()))
    data[-5:-3] = struct.pack(">H", 9)  # the area claims 9 data bytes inside a 7-byte block
    assert fault(bytes(data)).field == "view[0].extended_data_length"


def test_zero_resolution() -> None:
    data = bytearray(encode(sample_2005()))
    data[18:20] = b"\x00\x00"  # x resolution
    assert fault(bytes(data)).field == "view[0].x_resolution"


def test_2011_representation_length_must_agree() -> None:
    record = MinutiaeRecord(
        views=(
            FingerView(
                2,
                0,
                0,
                300,
                400,
                197,
                197,
                (Minutia(MinutiaType.ENDING, 1, 2, 3, 50),),
                None,
                (),
                Representation2011(),
            ),
        ),
        version=FormatVersion.V2011,
    )
    data = bytearray(encode(record))
    data[15:19] = struct.pack(">I", struct.unpack(">I", data[15:19])[0] - 1)
    assert fault(bytes(data)).field == "view[0].representation_length"
    data = bytearray(encode(record))
    data[14] = 2  # certification flag
    assert fault(bytes(data)).field == "header.certification_flag"


# ---- encode refuses what it cannot write ------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"angle": 256}, "view[0].minutia[0].angle"),
        ({"angle": -1}, "view[0].minutia[0].angle"),
        ({"x": 300}, "view[0].minutia[0].x"),
        ({"y": -1}, "view[0].minutia[0].y"),
        ({"quality": 101}, "view[0].minutia[0].quality"),
    ],
)
def test_encode_refuses_out_of_range_minutiae(change: dict[str, Any], field: str) -> None:
    record = sample_2005()
    m = record.views[0].minutiae[0]
    bad = dataclasses.replace(m, **change)
    view = record.views[0]
    broken = MinutiaeRecord(
        views=(
            FingerView(
                view.finger_position,
                view.view_number,
                view.impression_type,
                view.width,
                view.height,
                view.x_resolution,
                view.y_resolution,
                (bad,),
                view.finger_quality,
            ),
        )
    )
    with pytest.raises(TemplateError) as info:
        encode(broken)
    assert info.value.field == field


def test_2005_views_share_one_geometry() -> None:
    v = sample_2005().views[0]
    other = FingerView(3, 0, 0, 301, 400, 197, 197, (), 50)
    with pytest.raises(TemplateError) as info:
        encode(MinutiaeRecord(views=(v, other)))
    assert info.value.field == "view[1].width"


def test_template_error_reads_well_and_is_an_invalid_field() -> None:
    from idguard.core.errors import InvalidField

    err = TemplateError("view[0].minutia[3].angle", "300 is not 0..255")
    assert str(err) == "view[0].minutia[3].angle: 300 is not 0..255"
    assert isinstance(err, InvalidField)
    assert err.status == 422


# ---- arrays follow the standard's conventions ---------------------------------------------------
def test_arrays_keep_the_standard_frame() -> None:
    a = minutiae_arrays(sample_2005().views[0])
    assert a.x.tolist() == [10, 299, 0]
    assert a.y.tolist() == [20, 399, 0]  # y grows downwards, as stored
    assert a.angle[0] == pytest.approx(math.pi / 2)  # 64 units of 1.40625 degrees, counter-clockwise
    assert a.angle[1] == pytest.approx(255 * 2 * math.pi / 256)
    assert a.type.tolist() == [1, 2, 0]
    assert a.quality.tolist() == [80, 100, 0]
    assert (a.x_resolution, a.y_resolution, a.width, a.height) == (197, 197, 300, 400)
