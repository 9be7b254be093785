"""ISO/IEC 19794-2 finger minutiae record codec: `parse(bytes)` and `encode(record)`, 2005 and 2011.

Layout (all integers big-endian):

2005 ("FMR\\0", " 20\\0") - 24-byte record header: format id 4, version 4, record length 4,
capture equipment 2 (4-bit compliance, 12-bit device id), image width 2, height 2, x and y
resolution 2+2 (pixels/cm), number of views 1, reserved 1. Each view: finger position 1,
view number (4 bits) and impression type (4 bits) 1, finger quality 1, number of minutiae 1,
minutiae 6 bytes each (type 2 bits + x 14 bits, reserved 2 bits + y 14 bits, angle 1, quality 1),
extended data block length 2, then areas (type 2, data length 2, data).

2011 ("FMR\\0", "030\\0") - 15-byte header: format id, version, record length 4,
number of representations 2, certification flag 1. Each representation: its own length 4,
capture date-time 9, device technology 1, vendor 2, device type 2, quality blocks (count 1,
5 bytes each), certification blocks when flagged (count 1, 3 bytes each), finger position 1,
representation number 1, x and y resolution 2+2, impression type 1, width 2, height 2,
minutia field length (4 bits: 5 or 6) and ridge ending type (4 bits) 1, number of minutiae 1,
minutiae (5 or 6 bytes), extended data block length 2, then areas whose length field counts
the 4-byte area header too.

Every malformed input raises `TemplateError(field, detail)`; no other exception escapes `parse`.
"""

from __future__ import annotations

import struct

from idguard.biometrics.record import (
    QUALITY_NOT_REPORTED,
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
    validate,
)

FORMAT_ID = b"FMR\x00"
VERSIONS = {b" 20\x00": FormatVersion.V2005, b"030\x00": FormatVersion.V2011}
VERSION_BYTES = {v: k for k, v in VERSIONS.items()}


class _Reader:
    """Bounds-checked big-endian reads; running out of bytes names the field being read."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, field: str) -> bytes:
        if self.pos + n > len(self.data):
            raise TemplateError(
                field,
                f"the record ends at byte {len(self.data)}, {n} byte(s) were expected at offset {self.pos}",
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u8(self, field: str) -> int:
        return self.take(1, field)[0]

    def u16(self, field: str) -> int:
        value: int = struct.unpack(">H", self.take(2, field))[0]
        return value

    def u32(self, field: str) -> int:
        value: int = struct.unpack(">I", self.take(4, field))[0]
        return value


def parse(data: bytes) -> MinutiaeRecord:
    """Parse and validate one record; raises TemplateError naming the first fault found."""
    r = _Reader(bytes(data))
    magic = r.take(4, "header.format_id")
    if magic != FORMAT_ID:
        raise TemplateError("header.format_id", f"expected b'FMR\\x00', found {magic!r}")
    raw_version = r.take(4, "header.version")
    version = VERSIONS.get(raw_version)
    if version is None:
        raise TemplateError(
            "header.version", f"{raw_version!r} is neither 2005 (b' 20\\x00') nor 2011 (b'030\\x00')"
        )
    length = r.u32("record_length")
    if length != len(r.data):
        raise TemplateError(
            "record_length", f"the header says {length} bytes but the record has {len(r.data)}"
        )
    record = _parse_2005(r) if version is FormatVersion.V2005 else _parse_2011(r)
    if r.pos != len(r.data):
        raise TemplateError(
            "record_length", f"{len(r.data) - r.pos} byte(s) follow the last view: a count field is wrong"
        )
    validate(record)
    return record


def _parse_minutia(r: _Reader, where: str, *, with_quality: bool) -> Minutia:
    tx = r.u16(f"{where}.x")
    ry = r.u16(f"{where}.y")
    angle = r.u8(f"{where}.angle")
    quality = r.u8(f"{where}.quality") if with_quality else QUALITY_NOT_REPORTED
    if tx >> 14 == 0b11:
        raise TemplateError(
            f"{where}.type", "type bits 11 are reserved (01 ending, 10 bifurcation, 00 other)"
        )
    if ry >> 14:
        raise TemplateError(f"{where}.y", "the two bits above y are reserved and must be 0")
    return Minutia(type=MinutiaType(tx >> 14), x=tx & 0x3FFF, y=ry, angle=angle, quality=quality)


def _parse_extended(r: _Reader, where: str, *, length_includes_header: bool) -> tuple[ExtendedDataArea, ...]:
    block = r.u16(f"{where}.extended_data_length")
    end = r.pos + block
    areas: list[ExtendedDataArea] = []
    while r.pos < end:
        k = len(areas)
        type_id = r.u16(f"{where}.extended_data[{k}].type_id")
        size = r.u16(f"{where}.extended_data[{k}].length")
        if length_includes_header:
            if size < 4:
                raise TemplateError(
                    f"{where}.extended_data[{k}].length", f"{size} is shorter than the area header"
                )
            size -= 4
        if r.pos + size > end:
            raise TemplateError(f"{where}.extended_data_length", f"area {k} runs past the {block}-byte block")
        areas.append(ExtendedDataArea(type_id=type_id, data=r.take(size, f"{where}.extended_data[{k}].data")))
    if r.pos != end:
        raise TemplateError(
            f"{where}.extended_data_length", f"an area header runs past the {block}-byte block"
        )
    return tuple(areas)


def _parse_2005(r: _Reader) -> MinutiaeRecord:
    equipment = r.u16("header.capture_equipment")
    width = r.u16("header.width")
    height = r.u16("header.height")
    x_res = r.u16("header.x_resolution")
    y_res = r.u16("header.y_resolution")
    count = r.u8("header.view_count")
    if r.u8("header.reserved") != 0:
        raise TemplateError("header.reserved", "byte 23 is reserved and must be 0")
    views = []
    for i in range(count):
        where = f"view[{i}]"
        position = r.u8(f"{where}.finger_position")
        view_impression = r.u8(f"{where}.view_number")
        quality = r.u8(f"{where}.finger_quality")
        n = r.u8(f"{where}.minutia_count")
        minutiae = tuple(_parse_minutia(r, f"{where}.minutia[{j}]", with_quality=True) for j in range(n))
        views.append(
            FingerView(
                finger_position=position,
                view_number=view_impression >> 4,
                impression_type=view_impression & 0x0F,
                width=width,
                height=height,
                x_resolution=x_res,
                y_resolution=y_res,
                minutiae=minutiae,
                finger_quality=quality,
                extended_data=_parse_extended(r, where, length_includes_header=False),
            )
        )
    return MinutiaeRecord(
        views=tuple(views),
        version=FormatVersion.V2005,
        capture_equipment_compliance=equipment >> 12,
        capture_equipment_id=equipment & 0x0FFF,
    )


def _parse_2011(r: _Reader) -> MinutiaeRecord:
    count = r.u16("header.view_count")
    flag = r.u8("header.certification_flag")
    if flag > 1:
        raise TemplateError("header.certification_flag", f"{flag} is not 0 or 1")
    views = tuple(_parse_representation(r, f"view[{i}]", certified=flag == 1) for i in range(count))
    return MinutiaeRecord(views=views, version=FormatVersion.V2011, certification_flag=flag == 1)


def _parse_representation(r: _Reader, where: str, *, certified: bool) -> FingerView:
    start = r.pos
    length = r.u32(f"{where}.representation_length")
    if start + length > len(r.data):
        raise TemplateError(
            f"{where}.representation_length", f"{length} bytes run past the end of the record"
        )
    t = f"{where}.capture_time"
    capture_time = CaptureDateTime(
        year=r.u16(f"{t}.year"),
        month=r.u8(f"{t}.month"),
        day=r.u8(f"{t}.day"),
        hour=r.u8(f"{t}.hour"),
        minute=r.u8(f"{t}.minute"),
        second=r.u8(f"{t}.second"),
        millisecond=r.u16(f"{t}.millisecond"),
    )
    technology = r.u8(f"{where}.device_technology")
    vendor = r.u16(f"{where}.device_vendor")
    device_type = r.u16(f"{where}.device_type")
    quality_blocks = tuple(
        QualityBlock(
            score=r.u8(f"{where}.quality_blocks[{k}].score"),
            vendor_id=r.u16(f"{where}.quality_blocks[{k}].vendor_id"),
            algorithm_id=r.u16(f"{where}.quality_blocks[{k}].algorithm_id"),
        )
        for k in range(r.u8(f"{where}.quality_block_count"))
    )
    certification_blocks: tuple[CertificationBlock, ...] = ()
    if certified:
        certification_blocks = tuple(
            CertificationBlock(
                authority_id=r.u16(f"{where}.certification_blocks[{k}].authority_id"),
                scheme_id=r.u8(f"{where}.certification_blocks[{k}].scheme_id"),
            )
            for k in range(r.u8(f"{where}.certification_block_count"))
        )
    position = r.u8(f"{where}.finger_position")
    number = r.u8(f"{where}.view_number")
    x_res = r.u16(f"{where}.x_resolution")
    y_res = r.u16(f"{where}.y_resolution")
    impression = r.u8(f"{where}.impression_type")
    width = r.u16(f"{where}.width")
    height = r.u16(f"{where}.height")
    flags = r.u8(f"{where}.minutia_field_length")
    field_length = flags >> 4
    if field_length not in (5, 6):
        raise TemplateError(f"{where}.minutia_field_length", f"{field_length} is not 5 or 6 bytes")
    n = r.u8(f"{where}.minutia_count")
    minutiae = tuple(
        _parse_minutia(r, f"{where}.minutia[{j}]", with_quality=field_length == 6) for j in range(n)
    )
    extended = _parse_extended(r, where, length_includes_header=True)
    if r.pos - start != length:
        raise TemplateError(
            f"{where}.representation_length",
            f"the field says {length} bytes but the fields take {r.pos - start}",
        )
    return FingerView(
        finger_position=position,
        view_number=number,
        impression_type=impression,
        width=width,
        height=height,
        x_resolution=x_res,
        y_resolution=y_res,
        minutiae=minutiae,
        extended_data=extended,
        representation=Representation2011(
            capture_time=capture_time,
            device_technology=technology,
            device_vendor=vendor,
            device_type=device_type,
            quality_blocks=quality_blocks,
            certification_blocks=certification_blocks,
            ridge_ending_type=flags & 0x0F,
            minutia_quality_reported=field_length == 6,
        ),
    )


def encode(record: MinutiaeRecord) -> bytes:
    """Serialise a record; validates first, so anything `encode` writes, `parse` reads back equal."""
    validate(record)
    body = _encode_2005(record) if record.version is FormatVersion.V2005 else _encode_2011(record)
    total = 12 + len(body)  # format id, version and the length field itself come first
    return FORMAT_ID + VERSION_BYTES[record.version] + struct.pack(">I", total) + body


def _encode_minutiae(view: FingerView, *, with_quality: bool) -> bytes:
    out = bytearray()
    for m in view.minutiae:
        out += struct.pack(">HHB", (int(m.type) << 14) | m.x, m.y, m.angle)
        if with_quality:
            out.append(m.quality)
    return bytes(out)


def _encode_extended(view: FingerView, *, length_includes_header: bool) -> bytes:
    areas = bytearray()
    for area in view.extended_data:
        size = len(area.data) + (4 if length_includes_header else 0)
        areas += struct.pack(">HH", area.type_id, size) + area.data
    return struct.pack(">H", len(areas)) + bytes(areas)


def _encode_2005(record: MinutiaeRecord) -> bytes:
    first = record.views[0]
    out = bytearray(
        struct.pack(
            ">HHHHHBB",
            (record.capture_equipment_compliance << 12) | record.capture_equipment_id,
            first.width,
            first.height,
            first.x_resolution,
            first.y_resolution,
            len(record.views),
            0,
        )
    )
    for view in record.views:
        if view.finger_quality is None:  # validate() refuses it; this keeps the types honest
            raise TemplateError("view.finger_quality", "a 2005 view needs a finger quality")
        out += struct.pack(
            ">BBBB",
            view.finger_position,
            (view.view_number << 4) | view.impression_type,
            view.finger_quality,
            len(view.minutiae),
        )
        out += _encode_minutiae(view, with_quality=True)
        out += _encode_extended(view, length_includes_header=False)
    return bytes(out)


def _encode_2011(record: MinutiaeRecord) -> bytes:
    out = bytearray(struct.pack(">HB", len(record.views), int(record.certification_flag)))
    for view in record.views:
        rep = view.representation
        if rep is None:  # validate() refuses it; this keeps the types honest
            raise TemplateError("view.representation", "a 2011 view needs its representation fields")
        t = rep.capture_time
        body = bytearray(
            struct.pack(">HBBBBBH", t.year, t.month, t.day, t.hour, t.minute, t.second, t.millisecond)
        )
        body += struct.pack(
            ">BHHB", rep.device_technology, rep.device_vendor, rep.device_type, len(rep.quality_blocks)
        )
        for q in rep.quality_blocks:
            body += struct.pack(">BHH", q.score, q.vendor_id, q.algorithm_id)
        if record.certification_flag:
            body.append(len(rep.certification_blocks))
            for c in rep.certification_blocks:
                body += struct.pack(">HB", c.authority_id, c.scheme_id)
        field_length = 6 if rep.minutia_quality_reported else 5
        body += struct.pack(
            ">BBHHBHHBB",
            view.finger_position,
            view.view_number,
            view.x_resolution,
            view.y_resolution,
            view.impression_type,
            view.width,
            view.height,
            (field_length << 4) | rep.ridge_ending_type,
            len(view.minutiae),
        )
        body += _encode_minutiae(view, with_quality=rep.minutia_quality_reported)
        body += _encode_extended(view, length_includes_header=True)
        out += struct.pack(">I", 4 + len(body)) + body
    return bytes(out)
