from gan.errors import first_line


def test_first_line_quotes_the_first_line_or_the_type():
    assert first_line(RuntimeError("Error(s) in loading state_dict:\n\tsize mismatch")) == (
        "Error(s) in loading state_dict:"
    )
    assert first_line(RuntimeError("\n  after a blank line\nmore")) == "after a blank line"
    assert first_line(KeyError()) == "KeyError"
