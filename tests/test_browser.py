"""The browser fixture itself: Debian's chromium renders a page from disk and runs its script."""


def test_chromium_renders_a_local_page(page, tmp_path):
    html = tmp_path / "p.html"
    html.write_text("<html><body><p id='x'>static</p><script>document.getElementById('x').textContent='ran'</script>")
    page.goto(html.as_uri())
    assert page.text_content("#x") == "ran"
