from .browser import browser  # noqa: F401 - the Chromium fixture for this folder's tests
