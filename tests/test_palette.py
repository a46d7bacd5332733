from geoseg.tasks.palette import KNOWN, TABLEAU_10, class_colour, rgb


def test_known_classes_keep_their_colours_whatever_the_case() -> None:
    assert class_colour("Lawn") == KNOWN["lawn"]
    assert class_colour("building") == KNOWN["building"]


def test_other_classes_get_a_stable_palette_colour() -> None:
    assert class_colour("solar_panel") in TABLEAU_10
    assert class_colour("solar_panel") == class_colour("solar_panel")
    assert len({class_colour(f"class{i}") for i in range(40)}) > 3


def test_rgb_reads_hex_colours() -> None:
    assert rgb("#7bc043") == (123, 192, 67)
