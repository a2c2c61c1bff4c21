"""Request validation: every malformed request raises InvalidRequest naming the offending field.

Images are made with Pillow in memory (or in tmp_path); nothing here loads a model.
"""

from __future__ import annotations

import base64
import io
import random

import pytest
from PIL import Image, ImageFile

from guardedge.runtime.errors import InvalidRequest
from guardedge.runtime.families.llama_guard_3_vision import DEFAULT_CATEGORIES
from guardedge.runtime.images import FLATTEN_BACKGROUND, ImageLimits, decode_image
from guardedge.runtime.requests import RequestLimits, parse_request
from guardedge.runtime.types import GuardRequest


# --- helpers -----------------------------------------------------------------------------------------


def image_bytes(img: Image.Image, fmt: str = "PNG", **save) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    return buf.getvalue()


def noise_png(size=(32, 32)) -> bytes:
    # Random (seeded) pixels so the PNG does not compress to almost nothing.
    return image_bytes(Image.frombytes("RGB", size, random.Random(0).randbytes(size[0] * size[1] * 3)))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def with_image(part: dict, text: str = "what is this?") -> dict:
    return {"messages": [{"role": "user", "content": [{"type": "text", "text": text}, {"type": "image", **part}]}]}


def hi(role: str = "user", text: str = "hi") -> dict:
    return {"role": role, "content": [{"type": "text", "text": text}]}


def violation(obj, **kwargs):
    """Parse ``obj``, expect InvalidRequest, return its first violation."""
    with pytest.raises(InvalidRequest) as info:
        parse_request(obj, **kwargs)
    assert info.value.violations, "InvalidRequest without violations"
    return info.value.violations[0]


def decoded(obj, **kwargs):
    """The request's image as the engine decodes it (parse_request reads only the header)."""
    return decode_image(parse_request(obj, **kwargs).image)


def assert_violation(obj, field: str, phrase: str, **kwargs):
    v = violation(obj, **kwargs)
    assert v.field == field, v
    assert phrase in v.description, v
    return v


@pytest.fixture(scope="module")
def png() -> bytes:
    return noise_png()


# --- request shape -----------------------------------------------------------------------------------


@pytest.mark.parametrize("obj, kind", [([], "list"), ("hi", "str"), (None, "NoneType"), (3, "int")])
def test_request_not_a_dict(obj, kind):
    assert_violation(obj, "request", f"must be a JSON object, got {kind}")


def test_invalid_request_is_a_value_error_with_readable_message():
    with pytest.raises(ValueError, match=r"request: must be a JSON object"):
        parse_request([])


@pytest.mark.parametrize("messages", [None, [], {}, "hi"])
def test_messages_missing_or_empty(messages):
    obj = {} if messages is None else {"messages": messages}
    assert_violation(obj, "messages", "non-empty list")


def test_first_role_assistant():
    assert_violation({"messages": [hi("assistant")]}, "messages[0].role", "expected 'user'")


def test_roles_not_alternating():
    v = assert_violation({"messages": [hi("user"), hi("user")]}, "messages[1].role", "expected 'assistant'")
    assert "alternate" in v.description


def test_three_messages_with_wrong_third_role():
    obj = {"messages": [hi("user"), hi("assistant"), hi("assistant")]}
    assert_violation(obj, "messages[2].role", "expected 'user'")


def test_unknown_role():
    assert_violation({"messages": [hi("system")]}, "messages[0].role", "must be 'user' or 'assistant', got 'system'")


def test_message_not_an_object():
    assert_violation({"messages": ["hi"]}, "messages[0]", "must be an object")


@pytest.mark.parametrize("content", [None, [], {"type": "text", "text": "x"}, 5])
def test_content_not_a_non_empty_list(content):
    obj = {"messages": [{"role": "user", "content": content}]}
    assert_violation(obj, "messages[0].content", "non-empty list of parts")


def test_content_error_names_the_message():
    obj = {"messages": [hi(), {"role": "assistant", "content": []}]}
    assert_violation(obj, "messages[1].content", "non-empty list")


@pytest.mark.parametrize("obj, field", [
    ({"messages": [hi()], "excluded_categories": ["S1"]}, "excluded_categories"),  # a misspelled policy field
    ({"messages": [hi()], "policy": {"S1": "x"}}, "policy"),
    ({"messages": [{**hi(), "name": "bob"}]}, "messages[0].name"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "a", "txt": "b"}]}]}, "messages[0].content[0].txt"),
])
def test_unknown_fields_are_refused_by_name(obj, field):
    """A field the request format does not have is an error, not silently dropped: a misspelled
    ``excluded_category_keys`` would otherwise classify against the whole policy."""
    v = assert_violation(obj, field, "is not a field here")
    assert "excluded_category_keys" in v.description or "role" in v.description or "text" in v.description


def test_unknown_image_fields_are_refused_when_images_are_read(png):
    assert_violation(with_image({"data": b64(png), "url": "http://x"}), "messages[0].content[1].url", "is not a field here")
    # Rendering a prompt reads no image: HF's own image parts ({"type": "image", "url": ...}) pass.
    parse_request(with_image({"url": "http://x"}), load_images=False)


def test_the_client_takes_model_as_its_routing_field():
    from guardedge.runtime.service.client import request_from_dict

    assert request_from_dict({"model": "demo", "messages": [hi()]}).model == "demo"
    with pytest.raises(InvalidRequest, match="modle"):
        request_from_dict({"modle": "demo", "messages": [hi()]})


def test_part_without_type():
    obj = {"messages": [{"role": "user", "content": [{"text": "hi"}]}]}
    assert_violation(obj, "messages[0].content[0].type", "must be 'text' or 'image', got None")


def test_part_unknown_type():
    obj = {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "audio"}]}]}
    assert_violation(obj, "messages[0].content[1].type", "got 'audio'")


def test_part_not_an_object():
    obj = {"messages": [{"role": "user", "content": ["hi"]}]}
    assert_violation(obj, "messages[0].content[0]", "must be an object")


@pytest.mark.parametrize("value", [None, 3, ["a"], {"t": 1}])
def test_text_not_a_string(value):
    obj = {"messages": [{"role": "user", "content": [{"type": "text", "text": value}]}]}
    assert_violation(obj, "messages[0].content[0].text", "must be a string")


def test_text_with_nul():
    obj = {"messages": [{"role": "user", "content": [{"type": "text", "text": "a\x00b"}]}]}
    assert_violation(obj, "messages[0].content[0].text", "NUL")


def test_too_many_messages():
    messages = [hi(("user", "assistant")[i % 2]) for i in range(5)]
    assert_violation({"messages": messages}, "messages", "has 5 messages; the limit is 4", limits=RequestLimits(max_messages=4))
    assert len(parse_request({"messages": messages[:4]}, limits=RequestLimits(max_messages=4)).messages) == 4


def test_too_many_messages_default_limit():
    messages = [hi(("user", "assistant")[i % 2]) for i in range(65)]
    assert_violation({"messages": messages}, "messages", "has 65 messages; the limit is 64")


def test_too_much_text():
    obj = {"messages": [hi(text="x" * 11)]}
    assert_violation(obj, "messages", "11 characters; the limit is 10", limits=RequestLimits(max_text_chars=10))


@pytest.mark.parametrize("request_id", [1, None, ["a"]])
def test_request_id_not_a_string(request_id):
    assert_violation({"messages": [hi()], "request_id": request_id}, "request_id", "must be a string")


# --- images: structure -------------------------------------------------------------------------------


def test_two_images_in_same_message_are_refused_by_a_one_image_family(png, demo_engine):
    part = {"type": "image", "data": b64(png)}
    obj = {"messages": [{"role": "user", "content": [part, {"type": "text", "text": "x"}, part]}]}
    request = parse_request(obj)  # several images are a family's business, not the request format's
    with pytest.raises(InvalidRequest) as err:
        demo_engine.prepare(request)
    v = err.value.violations[0]
    assert v.field == "messages" and "has 2 images (messages[0].content[0], messages[0].content[2])" in v.description
    assert "the llama-guard-3-vision family accepts one image per request" in v.description


def test_two_images_in_different_messages(png, demo_engine):
    part = {"type": "image", "data": b64(png)}
    obj = {
        "messages": [
            {"role": "user", "content": [part]},
            hi("assistant"),
            {"role": "user", "content": [{"type": "text", "text": "and?"}, part]},
        ]
    }
    with pytest.raises(InvalidRequest, match=r"messages\[0\]\.content\[0\], messages\[2\]\.content\[1\]"):
        demo_engine.prepare(parse_request(obj))


def test_more_images_than_any_family_takes_are_refused_even_without_loading():
    obj = {"messages": [{"role": "user", "content": [{"type": "image"}] * 17}]}
    assert_violation(obj, "messages", "has 17 images; the limit is 16 (max_images)", load_images=False)


def test_image_with_neither_path_nor_data():
    assert_violation(with_image({}), "messages[0].content[1]", "exactly one of 'path', base64 'data' or raw 'bytes'")


def test_image_with_both_path_and_data(png, tmp_path):
    (tmp_path / "a.png").write_bytes(png)
    obj = with_image({"path": str(tmp_path / "a.png"), "data": b64(png)})
    assert_violation(obj, "messages[0].content[1]", "exactly one of")


def test_image_data_not_a_string():
    assert_violation(with_image({"data": 123}), "messages[0].content[1].data", "must be a base64 string")


@pytest.mark.parametrize("path", ["", 5, None])
def test_image_path_not_a_non_empty_string(path):
    assert_violation(with_image({"path": path}), "messages[0].content[1].path", "non-empty string")


@pytest.mark.parametrize("data", ["not base64!!", "aGVsbG8", "@@@@"])
def test_bad_base64(data):
    assert_violation(with_image({"data": data}), "messages[0].content[1].data", "not valid base64")


def test_empty_image_bytes():
    assert_violation(with_image({"data": ""}), "messages[0].content[1].data", "empty (0 bytes)")


def test_empty_image_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    obj = with_image({"path": str(tmp_path / "empty.png")})
    assert_violation(obj, "messages[0].content[1].path", "empty (0 bytes)")


def test_non_image_bytes():
    v = assert_violation(with_image({"data": b64(b"hello")}), "messages[0].content[1].data", "not a readable image")
    assert "PNG, JPEG, WEBP, GIF, BMP" in v.description


def test_truncated_png(png):
    assert len(png) > 200
    truncated = png[:100]  # the header is whole: parsing passes, decoding names the field
    request = parse_request(with_image({"data": b64(truncated)}))
    assert request.image.size == (32, 32) and request.image.image is None
    with pytest.raises(InvalidRequest) as info:
        decode_image(request.image)
    [v] = info.value.violations
    assert v.field == "messages[0].content[1].data" and "truncated or corrupt" in v.description, v


def test_a_truncated_header_is_refused_when_parsing(png):
    assert_violation(with_image({"data": b64(png[:20])}), "messages[0].content[1].data", "truncated or corrupt")


def test_disallowed_format_tiff():
    tiff = image_bytes(Image.new("RGB", (8, 8), (10, 20, 30)), "TIFF")
    assert tiff[:2] in (b"II", b"MM")
    v = assert_violation(with_image({"data": b64(tiff)}), "messages[0].content[1].data", "not a readable image")
    assert "allowed formats" in v.description


def test_pixel_cap_with_low_limit():
    small = image_bytes(Image.new("RGB", (20, 20), (1, 2, 3)))
    limits = RequestLimits(image=ImageLimits(max_pixels=100))
    assert_violation(
        with_image({"data": b64(small)}), "messages[0].content[1].data", "20x20 = 400 pixels; the limit is 100", limits=limits
    )
    # The same image passes under the default limits.
    assert decoded(with_image({"data": b64(small)})).image.size == (20, 20)


@pytest.fixture
def load_spy(monkeypatch):
    """Records every ImageFile.load call (pixel decoding), to show bombs are refused before it."""
    calls = []
    original = ImageFile.ImageFile.load

    def spy(self):
        calls.append(self.size)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    return calls


@pytest.mark.parametrize("side", [8000, 12000])  # 64 Mpx (our 36 Mpx cap), 144 Mpx (also over Pillow's bomb check)
def test_large_dimension_png_refused_without_decoding(side, load_spy):
    big = image_bytes(Image.new("1", (side, side)))
    assert len(big) < 1_000_000  # small on disk, huge in memory
    load_spy.clear()
    v = violation(with_image({"data": b64(big)}))
    assert v.field == "messages[0].content[1].data"
    assert f"{side}x{side}" in v.description or "too large to decode safely" in v.description
    assert load_spy == []  # no pixel data was decoded


@pytest.mark.parametrize(
    "size, limits, expected",
    [
        ((8000, 8000), ImageLimits(), "image is 8000x8000 = 64000000 pixels; the limit is 36000000"),
        ((20, 20), ImageLimits(max_pixels=100), "image is 20x20 = 400 pixels; the limit is 100"),
        ((3, 40), ImageLimits(min_side=4), "image is 3x40; both sides must be at least 4"),
    ],
)
def test_header_limit_errors_are_not_reported_as_corrupt(size, limits, expected):
    data = image_bytes(Image.new("1", size))
    v = violation(with_image({"data": b64(data)}), limits=RequestLimits(image=limits))
    assert v.field == "messages[0].content[1].data"
    assert v.description == expected


def test_image_data_over_byte_cap(png):
    limits = RequestLimits(image=ImageLimits(max_bytes=1000))
    assert len(png) > 1400
    assert_violation(with_image({"data": b64(png)}), "messages[0].content[1].data", "more than 1000 bytes", limits=limits)


def test_image_file_over_byte_cap(png, tmp_path):
    (tmp_path / "big.png").write_bytes(png)
    limits = RequestLimits(image=ImageLimits(max_bytes=1000))
    assert_violation(
        with_image({"path": str(tmp_path / "big.png")}),
        "messages[0].content[1].path",
        f"{len(png)} bytes; the limit is 1000",
        limits=limits,
    )


def test_missing_image_file(tmp_path):
    missing = tmp_path / "nope.png"
    v = assert_violation(with_image({"path": str(missing)}), "messages[0].content[1].path", "does not exist")
    assert "nope.png" in v.description


def test_image_path_that_is_a_directory(tmp_path):
    assert_violation(with_image({"path": str(tmp_path)}), "messages[0].content[1].path", "does not exist")


# --- categories and exclusions -----------------------------------------------------------------------


@pytest.mark.parametrize("categories", [{}, [], ["S1"], "S1: x", 3])
def test_categories_not_a_non_empty_dict(categories):
    assert_violation({"messages": [hi()], "categories": categories}, "categories", "non-empty object")


@pytest.mark.parametrize("key", ["S 1", "S1,S2", "S1:", "", "S\t1"])
def test_category_code_with_forbidden_characters(key):
    obj = {"messages": [hi()], "categories": {key: "Something."}}
    assert_violation(obj, f"categories[{key!r}]", "without spaces, commas or colons")


@pytest.mark.parametrize("text,phrase", [("\n", "non-empty"), ("\r\n\t", "non-empty"), ("a\x00b", "control character"), ("a\x07", "control character")])
def test_category_description_refusals(text, phrase):
    assert_violation({"messages": [hi()], "categories": {"C1": text}}, "categories['C1']", phrase)


def test_multi_line_descriptions_are_accepted_as_meta_writes_them():
    request = parse_request({"messages": [hi()], "categories": {"S1": "Violent Crimes. \nAI models should not ...\n - Unlawful violence"}})
    assert request.categories == (("S1", "Violent Crimes. \nAI models should not ...\n - Unlawful violence"),)


@pytest.mark.parametrize("text", ["", "   ", 5, None])
def test_category_description_empty_or_not_a_string(text):
    assert_violation({"messages": [hi()], "categories": {"C1": text}}, "categories['C1']", "non-empty string")


def test_all_category_problems_are_reported():
    obj = {"messages": [hi()], "categories": {"A B": "x", "C1": "", "C2": "ok.\nfine", "C3": "a\x00b"}}
    with pytest.raises(InvalidRequest) as info:
        parse_request(obj)
    assert [v.field for v in info.value.violations] == ["categories['A B']", "categories['C1']", "categories['C3']"]


def test_excluded_key_unknown_among_defaults():
    obj = {"messages": [hi()], "excluded_category_keys": ["S99"]}
    v = assert_violation(obj, "excluded_category_keys", "unknown category codes ['S99']", default_categories=DEFAULT_CATEGORIES)
    assert "S1, S2" in v.description


def test_excluded_key_unknown_among_custom_categories():
    obj = {"messages": [hi()], "categories": {"C1": "a.", "C2": "b."}, "excluded_category_keys": ["S1"]}
    v = assert_violation(obj, "excluded_category_keys", "unknown category codes ['S1']")
    assert "known: C1, C2" in v.description


def test_excluding_all_custom_categories():
    obj = {"messages": [hi()], "categories": {"C1": "a.", "C2": "b."}, "excluded_category_keys": ["C2", "C1"]}
    assert_violation(obj, "excluded_category_keys", "excludes every category")


def test_excluding_all_default_categories():
    keys = [k for k, _ in DEFAULT_CATEGORIES]
    obj = {"messages": [hi()], "excluded_category_keys": keys}
    assert_violation(obj, "excluded_category_keys", "excludes every category", default_categories=DEFAULT_CATEGORIES)


@pytest.mark.parametrize("excluded", ["S1", [1], {"S1": True}])
def test_excluded_not_a_list_of_strings(excluded):
    obj = {"messages": [hi()], "excluded_category_keys": excluded}
    assert_violation(obj, "excluded_category_keys", "must be a list of category codes")


def test_excluded_keys_deduplicated_and_custom_categories_kept_in_order():
    obj = {
        "messages": [hi()],
        "categories": {"Z": "z.", "A": "a.", "M": "m."},
        "excluded_category_keys": ["A", "A"],
        "request_id": "r-1",
    }
    request = parse_request(obj)
    assert request.categories == (("Z", "z."), ("A", "a."), ("M", "m."))
    assert request.excluded_category_keys == ("A",)
    assert request.request_id == "r-1"


# --- positive cases ----------------------------------------------------------------------------------


def test_string_content_is_one_text_part():
    request = parse_request({"messages": [{"role": "user", "content": "hello there"}]})
    assert isinstance(request, GuardRequest)
    [message] = request.messages
    assert message.role == "user"
    assert len(message.content) == 1
    assert message.content[0].type == "text"
    assert message.content[0].text == "hello there"
    assert request.categories is None and request.excluded_category_keys == () and request.request_id == ""
    assert not request.has_image


def test_bare_image_placeholder_accepted_without_loading():
    request = parse_request(with_image({}), load_images=False)
    assert request.has_image
    assert request.image is None


def test_valid_png_by_data(png):
    request = parse_request(with_image({"data": b64(png)}))
    assert request.has_image
    assert request.image.image is None and request.image.size == (32, 32)  # parsing reads the header only
    image = decode_image(request.image)
    assert image.image.mode == "RGB" and image.data is None
    assert image.image.size == (32, 32)
    assert request.image.source == "data"


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    jpeg = image_bytes(Image.new("RGB", (20, 10), (200, 30, 30)), "JPEG", exif=exif)
    with Image.open(io.BytesIO(jpeg)) as raw:
        assert raw.size == (20, 10)
        assert raw.getexif().get(0x0112) == 6
    image = decoded(with_image({"data": b64(jpeg)})).image
    assert image.size == (10, 20)
    assert image.mode == "RGB"


def test_transparent_pixels_flattened_onto_grey():
    img = Image.new("RGBA", (4, 2), (255, 255, 255, 0))  # fully transparent white
    img.putpixel((0, 0), (0, 0, 255, 255))  # one opaque blue pixel
    image = decoded(with_image({"data": b64(image_bytes(img))})).image
    assert image.mode == "RGB"
    assert image.getpixel((1, 1)) == FLATTEN_BACKGROUND == (128, 128, 128)
    assert image.getpixel((3, 0)) == (128, 128, 128)
    assert image.getpixel((0, 0)) == (0, 0, 255)


def test_palette_transparency_flattened_onto_grey():
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * (254 * 3))
    img.putpixel((0, 0), 1)
    data = image_bytes(img, "PNG", transparency=0)
    image = decoded(with_image({"data": b64(data)})).image
    assert image.getpixel((2, 2)) == (128, 128, 128)
    assert image.getpixel((0, 0)) == (255, 0, 0)


def test_animated_gif_first_frame_used():
    frames = [Image.new("RGB", (6, 6), (255, 0, 0)), Image.new("RGB", (6, 6), (0, 0, 255))]
    gif = image_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(io.BytesIO(gif)) as raw:
        assert raw.n_frames == 2
    result = decoded(with_image({"data": b64(gif)}))
    assert "2 frames" in result.source
    assert result.source.startswith("data")
    assert result.image.mode == "RGB"
    r, g, b = result.image.getpixel((3, 3))
    assert r > 200 and b < 50, (r, g, b)  # red: the first frame, not the blue second one


def test_relative_path_resolves_against_base_dir(png, tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "cat.png").write_bytes(png)
    request = parse_request(with_image({"path": "imgs/cat.png"}), base_dir=tmp_path)
    assert decode_image(request.image).image.size == (32, 32)
    assert request.image.source == "path:imgs/cat.png"


def test_relative_path_without_base_dir_is_relative_to_cwd(png, tmp_path, monkeypatch):
    (tmp_path / "cat.png").write_bytes(png)
    monkeypatch.chdir(tmp_path)
    assert decoded(with_image({"path": "cat.png"})).image.size == (32, 32)


def test_absolute_path_ignores_base_dir(png, tmp_path):
    (tmp_path / "cat.png").write_bytes(png)
    other = tmp_path / "elsewhere"
    other.mkdir()
    request = parse_request(with_image({"path": str(tmp_path / "cat.png")}), base_dir=other)
    assert decode_image(request.image).image.size == (32, 32)


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "BMP", "GIF"])
def test_other_allowed_formats_accepted(fmt):
    data = image_bytes(Image.new("RGB", (9, 7), (40, 80, 120)), fmt)
    image = decoded(with_image({"data": b64(data)})).image
    assert image.size == (9, 7)
    assert image.mode == "RGB"
