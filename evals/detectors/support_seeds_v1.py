"""Hand-written support conversations, first held-out batch (now part of ``dev``).

Written as the held-out ``test`` split after the first round of tuning. Their first run
gave re-ask recall 5/9 and contradiction recall 5/9 (precision 1.0 for both); the misses
showed general gaps (ask phrasings such as "mind sending", labels such as "transaction
reference", commitments outside the fixed topics), which were then fixed. Having been
tuned on, they belong to ``dev`` now; ``support_seeds_test.py`` is the fresh batch.
Same format as ``support_seeds.py``.
"""

# ruff: noqa: E501 - one message per line reads better than wrapped strings in test data

from __future__ import annotations

from support_seeds import Seed

SEEDS: list[Seed] = [
    {
        "id": "gym-membership",
        "messages": [
            ("user", "Hey, I want to freeze my gym membership for two months, member ID GM-88213."),
            (
                "assistant",
                "No problem. I've frozen membership GM-88213 from 1 July to 31 August; you won't be billed in that period.",
            ),
            ("user", "Will my locker still be reserved?"),
            ("assistant", "Yes, your locker stays reserved during the freeze."),
            ("user", "Great, thanks a lot."),
        ],
        "variants": [
            (
                4,
                "assistant",
                "Happy to check. What's the member ID on your card?",
                "re_ask",
                "member id re-ask",
            ),
            (
                6,
                "assistant",
                "Also, there's no freeze on your account, so July will be billed as usual.",
                "contradiction",
                "denies the freeze",
            ),
            (6, "assistant", "Your membership is paused until 31 August.", None, "restates"),
            (
                6,
                "assistant",
                "Mind sending me your member number so I can attach a note?",
                "re_ask",
                "member number re-ask, casual phrasing",
            ),
        ],
    },
    {
        "id": "hotel-late-checkout",
        "messages": [
            (
                "user",
                "Hi, I'm in room 412 and would like a late checkout tomorrow. My reservation number is HR-550127.",
            ),
            (
                "assistant",
                "Good morning! I've extended your checkout for reservation HR-550127 to 2 pm at no charge.",
            ),
            ("user", "Can you also book me a taxi to the airport at 2:30?"),
            (
                "assistant",
                "I've booked a taxi for 2:30 pm from the main entrance. The fare is about €45.",
            ),
            ("user", "Perfect."),
        ],
        "variants": [
            (
                4,
                "assistant",
                "Sure. Which reservation number is this for?",
                "re_ask",
                "reservation re-ask",
            ),
            (
                6,
                "assistant",
                "Just a heads-up: late checkout isn't available tomorrow, checkout is at 11.",
                "contradiction",
                "denies the late checkout (topic outside the vocabulary)",
            ),
            (
                6,
                "assistant",
                "Sorry, I don't see any taxi booked for you.",
                "contradiction",
                "denies the taxi booking",
            ),
            (
                6,
                "assistant",
                "Do you need a receipt for the taxi sent to your email?",
                None,
                "offer",
            ),
            (
                6,
                "assistant",
                "Would you like me to book the taxi for 3 pm instead?",
                None,
                "offer to change",
            ),
        ],
    },
    {
        "id": "bank-transfer",
        "messages": [
            (
                "user",
                "I sent $2,300 to the wrong account yesterday. Transaction reference TRX-771045. Can you recall it?",
            ),
            (
                "assistant",
                "I'm sorry that happened. I've submitted a recall request for TRX-771045; the receiving bank has 10 business days to respond.",
            ),
            ("user", "Will I get a notification?"),
            ("assistant", "Yes, I'll email you as soon as the receiving bank answers."),
            ("user", "My email is chen.wei@postbox.net, just in case."),
            ("assistant", "Thanks, noted: chen.wei@postbox.net."),
        ],
        "variants": [
            (
                7,
                "assistant",
                "Could you let me know the transaction reference so I can follow it?",
                "re_ask",
                "reference re-ask",
            ),
            (
                7,
                "assistant",
                "What email address should we use for the notification?",
                "re_ask",
                "email re-ask",
            ),
            (
                7,
                "assistant",
                "Is there another email you'd like copied on the updates?",
                None,
                "asks for another email",
            ),
            (
                7,
                "assistant",
                "I don't see a recall request for this transfer.",
                "contradiction",
                "denies the recall (topic outside the vocabulary)",
            ),
        ],
    },
    {
        "id": "furniture-delivery",
        "messages": [
            ("user", "My sofa delivery was supposed to be today but nobody came. Order SF-30981."),
            (
                "assistant",
                "I apologise. The courier missed the slot. I've rescheduled delivery of order SF-30981 for Thursday between 8 and 12.",
            ),
            ("user", "Thursday works. Can I get something for the trouble?"),
            ("assistant", "Of course, I've applied a $50 credit to your account."),
            ("user", "Thanks. Actually, the order is SF-30918, I typed it wrong."),
            (
                "assistant",
                "Thanks for flagging it. I've moved the Thursday delivery and the credit to order SF-30918.",
            ),
        ],
        "variants": [
            (
                7,
                "assistant",
                "Your Thursday delivery for order SF-30981 is confirmed.",
                "contradiction",
                "uses the corrected-away order number",
            ),
            (
                7,
                "assistant",
                "There is no credit on your account at the moment.",
                "contradiction",
                "denies the credit",
            ),
            (
                7,
                "assistant",
                "Your Thursday delivery for order SF-30918 is confirmed.",
                None,
                "uses the corrected number",
            ),
            (
                7,
                "assistant",
                "Can you confirm the order number once more?",
                "re_ask",
                "order re-ask after it was settled",
            ),
            (
                7,
                "assistant",
                "Your credit of $30 has been applied.",
                "contradiction",
                "another amount",
            ),
        ],
    },
    {
        "id": "vet-appointment",
        "messages": [
            ("user", "I'd like to book a check-up for my dog Bruno. My phone is 0412 555 309."),
            (
                "assistant",
                "Happy to help. I've scheduled Bruno for a check-up on Monday at 10:15 with Dr. Hale.",
            ),
            ("user", "Does he need to fast before?"),
            ("assistant", "No fasting needed for a routine check-up."),
            ("user", "Ok, see you Monday."),
        ],
        "variants": [
            (
                6,
                "assistant",
                "One more thing, what's a good phone number for reminders?",
                "re_ask",
                "phone re-ask",
            ),
            (
                6,
                "assistant",
                "Actually, I can't find an appointment for Bruno this week.",
                "contradiction",
                "denies the appointment",
            ),
            (6, "assistant", "Would you like a reminder text the day before?", None, "offer"),
        ],
    },
    {
        "id": "software-license",
        "messages": [
            ("user", "Our team license expired. Customer ID is CUS-20457 and we need 12 seats."),
            (
                "assistant",
                "Thanks. I've renewed customer CUS-20457 for 12 seats for one year and emailed the invoice.",
            ),
            ("user", "Can we add 3 more seats next month?"),
            ("assistant", "Yes, seats can be added at any time; they are prorated."),
            ("user", "Great."),
        ],
        "variants": [
            (
                6,
                "assistant",
                "To add seats later, I'll need your customer ID.",
                "re_ask",
                "customer id re-ask",
            ),
            (
                6,
                "assistant",
                "Note that your license has not been renewed yet.",
                "contradiction",
                "denies the renewal (topic outside the vocabulary)",
            ),
            (
                4,
                "assistant",
                "Sure. Before that, how many seats do you currently have?",
                "re_ask",
                "seat count re-ask",
            ),
        ],
    },
]
