"""What an inbound SMS reply says of the messages it answers: positive, neutral or negative.

One pure function, `classify_reply`, used by the collector when it maps Twilio's inbound webhook
(streams/collector/twilio.py); the event carries the label, and nothing downstream classifies again
(docs/architecture.md, "Replies understood").

- The language is told apart by script alone: a reply with any CJK ideograph is read as Chinese, any other
  as English. Deterministic, and enough for the two languages nudgeflow writes its templates in.
- English: VADER (the `vaderSentiment` package, lexicon shipped in the wheel, no download), a lexicon and
  rules made for short social-media text, plus the phrases of marketing replies it does not know.
- Chinese: a small lexicon of the words people answer marketing SMS with, matched longest first with a
  negator flipping a positive word. SnowNLP was measured and not taken: last released in 2015, 56 MB
  installed, 1.8 s to load its model, 0.25 ms a reply, and trained on product reviews it scored
  "别再发了" (stop sending) and "太好了谢谢" as neutral (0.50, 0.55).
"""

from __future__ import annotations

import math
import re
from functools import cache
from typing import NamedTuple

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from schemas.limits import DEFAULT_LIMITS
from schemas.profile import ReplySentiment

# VADER's own recommended cut-offs on its compound score (its README: >= 0.05 positive, <= -0.05 negative).
# The Chinese score is normalised the same way, where one matched word already reaches past them: a reply
# saying anything either way is labelled so, and only replies that say nothing are neutral. A wrong
# "negative" costs a week without promotions for one person, a missed one a promotion to someone annoyed.
POSITIVE_FROM = 0.05
NEGATIVE_UPTO = -0.05

# Marketing replies VADER has no words for ("please remove me" is +0.32 to it, "unsubscribe" 0): a reply
# with one of these is negative at least this much. Matched on whole words of the lower-cased text.
OPT_OUT_SCORE = -0.6
_OPT_OUT = re.compile(
    r"\b(?:stop|quit|cease)\s+(?:texting|sending|messaging|contacting|it)\b"
    r"|\bremove\s+me\b|\bunsubscribe\b|\bopt\s*out\b|\bcancel\s+my\s+subscription\b"
    r"|\b(?:don'?t|do\s+not|never)\s+(?:text|message|contact|send)\b"
    r"|\bnot\s+interested\b|\bwrong\s+number\b|\bspam\b|\bnever\s+signed\s+up\b"
    r"|\bwho\s+gave\s+you\s+my\s+number\b|\bnot\s+again\b|\btoo\s+many\s+(?:texts|messages)\b"
)

# CJK Unified Ideographs, Extension A and the compatibility block: the characters of written Chinese.
_CJK = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")

# Chinese words of replies to marketing SMS and their valence on VADER's scale (-4 .. 4). Phrases that begin
# with a negator and mean something of their own (不错, 没问题) are entries, found before the negator rule.
CHINESE_LEXICON: dict[str, float] = {
    # positive
    "谢谢": 2.0, "感谢": 2.0, "多谢": 2.0, "太好了": 3.0, "好的": 1.5, "好": 1.0, "很好": 2.5, "喜欢": 2.5,
    "爱了": 3.0, "棒": 2.5, "赞": 2.5, "不错": 2.0, "满意": 2.5, "开心": 2.5, "划算": 2.0, "期待": 2.0,
    "收到": 1.0, "可以": 1.0, "好评": 2.5, "推荐": 1.0, "厉害": 2.0, "完美": 3.0, "漂亮": 2.0, "想要": 1.5,
    "下单": 1.5, "没问题": 1.5, "哈哈": 1.5, "👍": 2.0, "❤": 2.0,
    # negative
    "别再发": -3.0, "别发": -3.0, "不要再发": -3.0, "不要发": -3.0, "再发": -2.0, "骚扰": -3.0, "垃圾": -3.0,
    "烦": -2.5, "讨厌": -2.5, "滚": -3.0, "拉黑": -3.0, "投诉": -3.0, "举报": -3.0, "取消订阅": -2.5,
    "退订": -2.0, "不需要": -2.5, "不用了": -1.5, "没兴趣": -2.5, "不感兴趣": -2.5, "失望": -2.5, "差": -2.0,
    "生气": -2.5, "骗子": -3.0, "恶心": -3.0, "无语": -2.0, "有病": -3.0, "走开": -2.5, "坏": -2.0,
    "打扰": -1.5, "发错": -1.5, "怎么有我的号码": -2.5, "还没收到": -1.5, "还没到": -1.5, "👎": -2.0,
}  # fmt: skip
_NEGATORS = frozenset("不没别非未无")
NEGATION_SCALE = -0.74  # VADER's own factor for a negated word
_LONGEST_WORD = max(len(word) for word in CHINESE_LEXICON)
# VADER's normalisation of a sum of valences into (-1, 1): x / sqrt(x^2 + alpha).
_ALPHA = 15.0


class Sentiment(NamedTuple):
    """How a reply reads: its label, and the score the label was cut from."""

    label: ReplySentiment
    score: float  # -1 (negative) .. 1 (positive), rounded to 4 places


NO_SENTIMENT = Sentiment(ReplySentiment.NEUTRAL, 0.0)


def is_chinese(text: str) -> bool:
    """Whether the reply holds a CJK ideograph: then it is read as Chinese, else as English."""
    return _CJK.search(text) is not None


def classify_reply(text: str, most: int = DEFAULT_LIMITS.reply_text_length) -> Sentiment:
    """The sentiment of an SMS reply, from its first `most` characters (Twilio's longest body by default):
    the cost of a call is bounded whatever the caller hands in."""
    text = text[:most].strip()
    if not text:
        return NO_SENTIMENT
    score = _chinese_score(text) if is_chinese(text) else _english_score(text)
    score = round(score, 4)
    if score >= POSITIVE_FROM:
        return Sentiment(ReplySentiment.POSITIVE, score)
    if score <= NEGATIVE_UPTO:
        return Sentiment(ReplySentiment.NEGATIVE, score)
    return Sentiment(ReplySentiment.NEUTRAL, score)


@cache
def _analyzer() -> SentimentIntensityAnalyzer:
    return SentimentIntensityAnalyzer()  # reads the lexicon shipped in the wheel, once per process


def _english_score(text: str) -> float:
    score = float(_analyzer().polarity_scores(text)["compound"])
    if _OPT_OUT.search(text.lower()):
        return min(score, OPT_OUT_SCORE)
    return score


def _chinese_score(text: str) -> float:
    """Sum of the valences of the lexicon's words in `text`, longest match first, left to right."""
    total = 0.0
    index = 0
    while index < len(text):
        for length in range(min(_LONGEST_WORD, len(text) - index), 0, -1):
            valence = CHINESE_LEXICON.get(text[index : index + length])
            if valence is not None:
                if valence > 0 and index > 0 and text[index - 1] in _NEGATORS:
                    valence *= NEGATION_SCALE  # 不喜欢, 不好, 没意思
                total += valence
                index += length
                break
        else:
            index += 1
    return total / math.sqrt(total * total + _ALPHA)
