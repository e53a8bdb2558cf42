"""The package as built and installed: wheel, sdist, version, license, changelog."""
