"""Held-out hand-written support conversations (the ``test`` split, second batch).

Written after all tuning, run once, and not tuned on: their numbers are the honest
estimate of how the offline detectors do on conversations they have not seen. Labels say
what a careful reader would flag, whether or not the rules can see it. Same format as
``support_seeds.py``.
"""

# ruff: noqa: E501 - one message per line reads better than wrapped strings in test data

from __future__ import annotations

from support_seeds import Seed

SEEDS: list[Seed] = [
    {
        "id": "parcel-lost",
        "messages": [
            (
                "user",
                "My parcel shows delivered but it's not here. Tracking number 1Z999AA10123456784.",
            ),
            (
                "assistant",
                "I'm sorry. I've opened an investigation with the courier and I'll send a replacement if it isn't found within 48 hours.",
            ),
            ("user", "OK. Can you send updates to my email? It's lena.fischer@web.de"),
            ("assistant", "Sure, updates will go to lena.fischer@web.de."),
            ("user", "Thanks."),
        ],
        "variants": [
            (
                6,
                "assistant",
                "To follow up with the courier I need the tracking number, could you paste it here?",
                "re_ask",
                "tracking re-ask",
            ),
            (
                6,
                "assistant",
                "Where should we send the updates? Please share an email address.",
                "re_ask",
                "email re-ask without 'your'",
            ),
            (
                6,
                "assistant",
                "We don't send replacements for parcels marked as delivered.",
                "contradiction",
                "denies the promised replacement",
            ),
            (
                6,
                "assistant",
                "If the courier finds it, I'll cancel the replacement.",
                None,
                "conditional plan, not a denial",
            ),
            (
                6,
                "assistant",
                "I'll keep you posted at lena.fischer@web.de.",
                None,
                "restates the email",
            ),
        ],
    },
    {
        "id": "mobile-plan",
        "messages": [
            ("user", "I'd like to switch to the unlimited plan. My number is 0151 2345 6789."),
            (
                "assistant",
                "Done! I've switched 0151 2345 6789 to Unlimited from your next billing cycle, at €35 a month.",
            ),
            ("user", "Will I lose my old data rollover?"),
            ("assistant", "Your rollover of 4 GB stays until the end of this cycle."),
            ("user", "Great, thanks."),
        ],
        "variants": [
            (
                6,
                "assistant",
                "Can I double-check the phone number on the account?",
                "re_ask",
                "phone re-ask",
            ),
            (
                6,
                "assistant",
                "Just so you know, the plan change hasn't gone through, you're still on the basic plan.",
                "contradiction",
                "denies the switch",
            ),
            (
                6,
                "assistant",
                "Your new plan costs €45 a month.",
                "contradiction",
                "another price than the one agreed",
            ),
            (
                6,
                "assistant",
                "Your Unlimited plan starts next cycle at €35 a month.",
                None,
                "restates",
            ),
            (6, "assistant", "Would you like to add a second line to the plan?", None, "offer"),
        ],
    },
    {
        "id": "doctor-portal",
        "messages": [
            (
                "user",
                "I can't log into the patient portal. My patient ID is P-660218 and my date of birth is 03/09/1979.",
            ),
            (
                "assistant",
                "Thanks. Your account was locked after three failed attempts. I've unlocked it and sent a reset link to the email on file.",
            ),
            ("user", "Got the link, thanks. Can I also book a blood test?"),
            (
                "assistant",
                "Yes, I've booked a blood test for Wednesday at 8:30 at the Main Street lab. Please fast for 10 hours.",
            ),
            ("user", "Perfect."),
        ],
        "variants": [
            (
                4,
                "assistant",
                "I can look into that. What's your patient ID?",
                "re_ask",
                "patient id re-ask",
            ),
            (
                6,
                "assistant",
                "For the lab, please confirm your date of birth.",
                "re_ask",
                "DOB re-ask",
            ),
            (
                6,
                "assistant",
                "There's no blood test booked for you at the moment.",
                "contradiction",
                "denies the booking",
            ),
            (
                6,
                "assistant",
                "No need to fast for this test.",
                "contradiction",
                "contradicts its instruction (outside the rules' reach)",
            ),
            (
                6,
                "assistant",
                "Your blood test is on Wednesday at 8:30; remember to fast.",
                None,
                "restates",
            ),
        ],
    },
    {
        "id": "broadband-install",
        "messages": [
            ("user", "Hi, I want fibre installed at 27 Rose Lane. Postcode BS3 4QT."),
            (
                "assistant",
                "Good news, BS3 4QT is covered. I've scheduled an engineer visit for Friday morning.",
            ),
            ("user", "Sorry, the postcode is BS3 4QJ, not BS3 4QT."),
            (
                "assistant",
                "Thanks, I've updated it to BS3 4QJ. It's also covered, and the Friday visit stands.",
            ),
            ("user", "Thanks!"),
        ],
        "variants": [
            (
                6,
                "assistant",
                "Your engineer will come to 27 Rose Lane, BS3 4QT, on Friday.",
                "contradiction",
                "uses the corrected-away postcode",
            ),
            (
                6,
                "assistant",
                "The engineer visit was cancelled, I'm afraid.",
                "contradiction",
                "says the visit is cancelled (a reversal it never made)",
            ),
            (
                6,
                "assistant",
                "What's the postcode for the installation address?",
                "re_ask",
                "postcode re-ask",
            ),
            (
                6,
                "assistant",
                "Your engineer will come to 27 Rose Lane, BS3 4QJ, on Friday.",
                None,
                "correct postcode",
            ),
        ],
    },
    {
        "id": "concert-tickets",
        "messages": [
            (
                "user",
                "I bought 2 tickets for the Saturday show but can't make it. Booking ref TKT-44170.",
            ),
            (
                "assistant",
                "I can help. I've moved booking TKT-44170 to the Sunday show, same seats, no fee.",
            ),
            ("user", "Great, can you email me the new tickets?"),
            ("assistant", "I'll email them within the hour."),
            ("user", "Thanks."),
        ],
        "variants": [
            (
                6,
                "assistant",
                "Could you send me your booking reference so I can attach the tickets?",
                "re_ask",
                "booking ref re-ask",
            ),
            (
                6,
                "assistant",
                "How many tickets do you have on the booking?",
                "re_ask",
                "ticket count re-ask",
            ),
            (
                6,
                "assistant",
                "Tickets can't be moved between shows, so your booking is still for Saturday.",
                "contradiction",
                "denies the move",
            ),
            (6, "assistant", "Enjoy the Sunday show!", None, "consistent"),
        ],
    },
    {
        "id": "tax-question",
        "messages": [
            ("user", "What's the deadline for filing my tax return this year?"),
            ("assistant", "For most people the deadline is 31 July."),
            ("user", "And can I still claim home office costs?"),
            ("assistant", "Yes, up to €1,260 a year as a flat rate."),
            ("user", "Sorry, what was the filing deadline again?"),
            ("assistant", "The deadline is 31 July."),
        ],
        "variants": [
            (
                6,
                "assistant",
                "The deadline is 30 September.",
                "inconsistency",
                "same question, another answer",
            ),
            (
                6,
                "assistant",
                "It's 31 July, unless you use a tax adviser, then it's later.",
                None,
                "same answer with a detail",
            ),
        ],
    },
    {
        "id": "course-enrolment",
        "messages": [
            ("user", "I want to enrol in the evening Spanish course. Student number S2209417."),
            (
                "assistant",
                "You're enrolled in Spanish B1, Tuesdays and Thursdays 6-8 pm, starting 9 September.",
            ),
            ("user", "Do I need to buy the textbook?"),
            ("assistant", "Yes, 'Aula 3', about €30, available at the campus shop."),
            ("user", "Ok."),
        ],
        "variants": [
            (
                6,
                "assistant",
                "Before you go, what is your student number?",
                "re_ask",
                "student number re-ask",
            ),
            (
                6,
                "assistant",
                "I'm sorry, you're not enrolled in any course this term.",
                "contradiction",
                "denies the enrolment",
            ),
            (6, "assistant", "Would you like a reminder before the first class?", None, "offer"),
        ],
    },
    {
        "id": "cloud-billing",
        "messages": [
            ("user", "We were charged twice this month. Invoice INV-2024-0571, account AC-77310."),
            (
                "assistant",
                "I see the duplicate charge of $480. I've refunded $480 to the card ending 4417; it takes 5-7 days.",
            ),
            ("user", "Thanks. Can you make sure it doesn't happen again?"),
            ("assistant", "I've removed the duplicate payment method that caused it."),
            ("user", "Great."),
        ],
        "variants": [
            (6, "assistant", "Which invoice number was duplicated?", "re_ask", "invoice re-ask"),
            (
                6,
                "assistant",
                "Please provide the account ID so I can add a note.",
                "re_ask",
                "account re-ask",
            ),
            (
                6,
                "assistant",
                "To be clear, no refund was issued; the second charge was valid.",
                "contradiction",
                "denies the refund",
            ),
            (
                6,
                "assistant",
                "You'll see the $380 refund on your statement soon.",
                "contradiction",
                "another amount",
            ),
            (6, "assistant", "You'll see the $480 refund within 5-7 days.", None, "restates"),
            (
                6,
                "assistant",
                "Do you have a second account that was billed too?",
                None,
                "asks about another account",
            ),
        ],
    },
]
