"""Task answers: display positions in, response indices out; the presentation order is a seeded permutation."""

import pytest

from posttrain.feedback.tasks import AnswerError, check_campaign, presentation_order, read_answer


def test_presentation_order_is_a_stable_permutation_that_differs_between_raters():
    orders = {tuple(presentation_order(4, 1, 7, rater)) for rater in range(30)}
    assert all(sorted(o) == [0, 1, 2, 3] for o in orders)
    assert len(orders) > 5  # 30 raters over 24 permutations: many distinct orders
    assert presentation_order(4, 1, 7, 3) == presentation_order(4, 1, 7, 3)  # a reload shows the same order


def test_pairwise_winner_is_read_through_the_order_shown():
    """Shown [1, 0]: the rater's A is response 1, so choosing A makes response 1 the winner."""
    assert read_answer("pairwise", {"choice": "A"}, [1, 0], [])["winner"] == 1
    assert read_answer("pairwise", {"choice": "B"}, [1, 0], [])["winner"] == 0
    assert read_answer("pairwise", {"choice": "tie"}, [1, 0], [])["winner"] is None
    with pytest.raises(AnswerError, match="choice"):
        read_answer("pairwise", {"choice": "C"}, [0, 1], [])


def test_ranking_order_maps_positions_to_indices():
    """Shown [2, 0, 1]; the rater ranks positions 1 > 2 > 0, i.e. responses 0 > 1 > 2."""
    assert read_answer("ranking", {"order": [1, 2, 0]}, [2, 0, 1], [])["order"] == [0, 1, 2]
    with pytest.raises(AnswerError, match="once"):
        read_answer("ranking", {"order": [1, 1, 0]}, [2, 0, 1], [])
    for order in ([0, 1, "2"], [0, None, 1], [[0], 1, 2], [0, 1, 2.0], [True, 0, 2]):  # not a TypeError (a 500)
        with pytest.raises(AnswerError, match="once"):
            read_answer("ranking", {"order": order}, [2, 0, 1], [])


def test_rubric_scores_are_stored_per_response_and_checked_against_the_scales():
    scales = [{"name": "helpful", "min": 1, "max": 5}]
    out = read_answer("rubric", {"scores": [{"helpful": 5}, {"helpful": 2}]}, [1, 0], scales)
    assert out["scores"] == [{"helpful": 2}, {"helpful": 5}]
    with pytest.raises(AnswerError, match="1..5"):
        read_answer("rubric", {"scores": [{"helpful": 6}, {"helpful": 2}]}, [1, 0], scales)
    with pytest.raises(AnswerError, match=r"response B \(scores\[1\]\): helpful must"):  # the page's label, the API's index
        read_answer("rubric", {"scores": [{"helpful": 5}, {"helpful": "2"}]}, [1, 0], scales)
    with pytest.raises(AnswerError, match=r"response A \(scores\[0\]\): 'x' is not a scale of this campaign \(helpful\)"):
        read_answer("rubric", {"scores": [{"helpful": 4, "x": 1}, {"helpful": 2}]}, [1, 0], scales)


def test_correction_flags_and_comment():
    out = read_answer("correction", {"response": 0, "text": "4", "flags": ["wrong", "wrong"], "comment": "off by one"},
                      [1, 0], [])
    assert out == {"response": 1, "text": "4", "flags": ["wrong"], "comment": "off by one"}
    with pytest.raises(AnswerError, match="flags"):
        read_answer("correction", {"text": "4", "flags": ["rude"]}, [0], [])


def test_campaign_shapes_are_checked():
    with pytest.raises(AnswerError, match="exactly 2"):
        check_campaign("pairwise", 3, [])
    with pytest.raises(AnswerError, match="scales"):
        check_campaign("rubric", 2, [])
    check_campaign("ranking", 4, [])
