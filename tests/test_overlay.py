"""The proposal layer hides under the user's label: what a stroke or a click said is not contradicted."""

import numpy as np
import pytest

from segdesk.qt import overlay
from segdesk.qt.overlay import LabelOverlayItem, proposal_tables


@pytest.mark.parametrize("large", [False, True])
def test_a_proposal_shows_only_where_the_user_has_not_said_anything(qtbot, monkeypatch, large):
    if large:  # coloured as painted, with no whole-label scan when the label over it is set
        monkeypatch.setattr(overlay, "LARGE_PIXELS", 100)
    proposal = np.ones((20, 30), np.uint8)
    proposal[5:15, 5:25] = 2  # a proposed object, label value 2 = class 1
    fill, edge = proposal_tables([(200, 120, 0)])
    item = LabelOverlayItem(proposal, fill, edge_lut=edge)
    user = np.zeros_like(proposal)
    user[0:10, 0:10] = 1  # painted background before the proposal arrived
    assert item.pixel_colour(5, 5).alpha() > 0 and item.pixel_colour(20, 5).alpha() > 0  # edge pixels
    item.hide_under(user)
    assert item.pixel_colour(5, 5).alpha() == 0 and item.pixel_colour(7, 7).alpha() == 0
    assert item.pixel_colour(20, 5).alpha() > 0 and item.pixel_colour(12, 12).alpha() > 0
    user[10:20, 20:30] = 1  # a later stroke: shown once its box is refreshed
    item.refresh((10, 20, 20, 30))
    assert item.pixel_colour(24, 14).alpha() == 0
    assert item.pixel_colour(19, 14).alpha() > 0
