"""Issue 25 item 5: a certified region reads as the sentence the README promises, with radii
rounded down (a printed region never claims more than the certificate)."""

import numpy as np

from hybridcert.blocks import CertifiedRegion


def region(gamma, token_blocks=("caption",), sigmas=None):
    return CertifiedRegion(tuple(token_blocks), {"image": 0.5} if sigmas is None else sigmas,
                           np.asarray(gamma, dtype=float))


def test_the_readme_sentence():
    assert str(region([np.nan, np.nan, 0.8])) == "nothing certified"
    assert str(region([0.8, 0.8, 0.8])) == "image within L2 0.40 and any 2 caption tokens"
    assert str(region([1.05, 0.8, 0.2, np.nan])) == (
        "image within L2 0.52; or image within L2 0.40 and any 1 caption token; or image "
        "within L2 0.10 and any 2 caption tokens")


def test_radii_are_rounded_down():
    assert str(region([0.8098, np.nan])) == "image within L2 0.40"      # 0.4049
    assert str(region([0.8102, np.nan])) == "image within L2 0.40"      # 0.4051, not 0.41
    assert str(region([0.0198, np.nan])) == "image within L2 0.0099"


def test_edges():
    assert str(region([1.0, 0.0, 0.0])) == ("image within L2 0.50; or image unchanged and "
                                            "any 2 caption tokens")
    assert str(region([np.inf, 0.8])) == ("any image change; or image within L2 0.40 and "
                                          "any 1 caption token")
    assert str(region(0.81, token_blocks=())) == "image within L2 0.40"
    assert str(region([0.0, 0.0], sigmas={})) == "any 1 caption token"
    assert str(region([0.0], sigmas={})) == "the input itself"
    two = region([[1.0, 0.5], [0.5, np.nan]], token_blocks=("caption", "ocr"),
                 sigmas={"image": 0.5, "audio": 1.0})
    assert str(two) == ("image, audio within joint shift 1.00 (sum of (L2/sigma)^2 <= "
                        "1.00^2); or image, audio within joint shift 0.50 (sum of "
                        "(L2/sigma)^2 <= 0.50^2) and any 1 ocr token; or image, audio within "
                        "joint shift 0.50 (sum of (L2/sigma)^2 <= 0.50^2) and any 1 caption "
                        "token")
