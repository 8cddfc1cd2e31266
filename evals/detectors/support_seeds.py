"""Hand-written support conversations with injected failures and hard negatives.

Written for this evaluation set (no external source). Each seed is a clean conversation;
each variant changes it in one place and says what a detector should flag there (or
``None`` for a hard negative: a message that looks like a failure but is not one).
A variant is ``(position, role, text, label, note)``: the message becomes message number
``position`` (1-based) of the case, replacing the message there when it has the same role
and inserted before it otherwise (appended past the end); ``label`` is the detector that
should flag that message.

The failure phrasings were written to vary (questions, requests, statements that the
assistant does not have the value; denials in several forms), not to match the rules.
"""

# ruff: noqa: E501 - one message per line reads better than wrapped strings in test data

from __future__ import annotations

Variant = tuple[int, str, str, str | None, str]
Seed = dict[str, object]

SEEDS: list[Seed] = [
    {
        "id": "bank-card",
        "messages": [
            ("user", "Hi, my debit card was declined at the pharmacy this morning."),
            ("assistant", "Sorry about that. Could you give me your account number so I can look?"),
            ("user", "Sure, it's account 55810-2291."),
            ("assistant", "Thanks. I can see a fraud hold on account 55810-2291 from last night."),
            ("user", "That was me buying plane tickets. Can you lift it?"),
            (
                "assistant",
                "I've removed the hold, so the card works again. I'll also add a travel note.",
            ),
            ("user", "Great, and can you raise my daily limit to $1,500 for the trip?"),
            ("assistant", "Done. Your daily limit is now $1,500 until the 30th."),
            ("user", "Perfect, thanks!"),
        ],
        "variants": [
            (
                6,
                "assistant",
                "Before I lift it, what is your account number?",
                "re_ask",
                "asked right after being told",
            ),
            (
                10,
                "assistant",
                "One last thing: could you please confirm the account number for my notes?",
                "re_ask",
                "re-ask at the end",
            ),
            (
                6,
                "assistant",
                "Can you confirm your account number is 55810-2291?",
                None,
                "confirmation quoting the value",
            ),
            (
                10,
                "assistant",
                "Just so you know, the hold on account 55810-2291 has been lifted.",
                None,
                "repeats the right value",
            ),
            (
                10,
                "assistant",
                "I'm sorry, I can't see any limit change on your account; it is still $500.",
                "contradiction",
                "denies the change it made",
            ),
        ],
    },
    {
        "id": "telecom-outage",
        "messages": [
            (
                "user",
                "My internet has been down since yesterday. Account number is TX-440912, postcode 90210.",
            ),
            ("assistant", "I'm sorry to hear that. I see an outage in 90210; engineers are on it."),
            ("user", "How long will it take? I work from home."),
            (
                "assistant",
                "The estimate is 6 pm today. I've applied a credit of $15 to your bill for the downtime.",
            ),
            ("user", "Thanks. Can someone call me when it's fixed? My mobile is 310 555 0147."),
            (
                "assistant",
                "I'll make sure you get a text at 310 555 0147 once service is restored.",
            ),
            ("user", "Ok."),
        ],
        "variants": [
            (
                4,
                "assistant",
                "To check that, I'll need your account number first.",
                "re_ask",
                "asks for the account again",
            ),
            (
                8,
                "assistant",
                "And what's the best number to reach you on?",
                "re_ask",
                "asks for the phone just given",
            ),
            (
                8,
                "assistant",
                "Which postcode is the service address in?",
                "re_ask",
                "asks for the postcode",
            ),
            (
                8,
                "assistant",
                "Do you have another number we could use as a backup?",
                None,
                "asks for a second number",
            ),
            (
                8,
                "assistant",
                "Just to be clear, there is no credit on your account for this outage.",
                "contradiction",
                "denies the credit",
            ),
            (
                8,
                "assistant",
                "No problem, the credit will show on your next bill.",
                None,
                "harmless 'no problem'",
            ),
        ],
    },
    {
        "id": "shop-return",
        "messages": [
            ("user", "Hello, I want to return a jacket. Order number 7781-3320, it's too small."),
            (
                "assistant",
                "I can help. I've found order 7781-3320: the Alpine shell jacket, size M.",
            ),
            ("user", "Can I swap it for a large instead of a refund?"),
            (
                "assistant",
                "Yes. I've created an exchange for size L and emailed you a prepaid return label.",
            ),
            ("user", "Got it, thanks. How long does the new one take?"),
            (
                "assistant",
                "It ships as soon as the courier scans your parcel, usually within 2 days.",
            ),
            ("user", "Perfect."),
        ],
        "variants": [
            (6, "assistant", "Sure. What was your order number again?", "re_ask", "'again' re-ask"),
            (
                8,
                "assistant",
                "We don't do exchanges for jackets, only refunds, I'm afraid.",
                "contradiction",
                "denies the exchange it created (a topic outside the rules' vocabulary)",
            ),
            (
                8,
                "assistant",
                "Sorry, I don't see any replacement or exchange booked on order 7781-3320.",
                "contradiction",
                "denies the exchange via replacement",
            ),
            (
                6,
                "assistant",
                "Could you send a photo of the label on the jacket?",
                None,
                "asks for something new",
            ),
            (
                8,
                "assistant",
                "Could you share your order number so I can track the parcel?",
                "re_ask",
                "re-ask for tracking",
            ),
        ],
    },
    {
        "id": "refund-boots",
        "messages": [
            (
                "user",
                "My boots arrived with a torn seam. Order NW-48213, email maria.lopez@example.com",
            ),
            (
                "assistant",
                "I couldn't find order NW-48213 under that email. Could you check the number?",
            ),
            ("user", "Oh sorry, actually it's NW-48231, I swapped two digits."),
            (
                "assistant",
                "Found it: Ridgeline boots, delivered 14 May. Would you like a refund or a replacement?",
            ),
            ("user", "A refund, please."),
            (
                "assistant",
                "I've issued a full refund of €149.00 (reference RF-90412). It arrives within 5 business days.",
            ),
            ("user", "Thank you! Do I need to send them back?"),
            (
                "assistant",
                "No, you can keep them. I'll email the confirmation to maria.lopez@example.com today.",
            ),
            ("user", "Great."),
        ],
        "variants": [
            (
                10,
                "assistant",
                "Just to confirm, your refund for order NW-48213 is on its way.",
                "contradiction",
                "uses the corrected-away order number",
            ),
            (
                10,
                "assistant",
                "Unfortunately our policy doesn't allow refunds on footwear.",
                "contradiction",
                "denies the refund it issued",
            ),
            (
                10,
                "assistant",
                "Your refund of €49.00 has been processed.",
                "contradiction",
                "another amount",
            ),
            (
                10,
                "assistant",
                "Could you tell me your email so I can send the confirmation?",
                "re_ask",
                "asks for the email",
            ),
            (
                10,
                "assistant",
                "Your refund of €149.00 for order NW-48231 is on its way.",
                None,
                "restates correctly",
            ),
            (
                10,
                "assistant",
                "No need to worry about return shipping for the refund.",
                None,
                "harmless 'no need'",
            ),
            (
                4,
                "assistant",
                "Hmm, that one doesn't match either. Could you double-check the order number?",
                None,
                "legit re-ask after failed lookup",
            ),
        ],
    },
    {
        "id": "insurance-claim",
        "messages": [
            (
                "user",
                "I need to file a claim, someone backed into my car. Policy number is PL-2209-6631.",
            ),
            (
                "assistant",
                "Sorry to hear that. I've opened claim CL-77120 under policy PL-2209-6631.",
            ),
            ("user", "Do I need a police report?"),
            (
                "assistant",
                "Not for a parking-lot incident under $2,000. I'll schedule an adjuster to call you tomorrow.",
            ),
            ("user", "Thanks. My name is Daniel Okafor by the way."),
            ("assistant", "Thanks, Daniel. The adjuster will call you between 9 and 11 am."),
            ("user", "Great."),
        ],
        "variants": [
            (
                4,
                "assistant",
                "Before we continue, may I have your policy number?",
                "re_ask",
                "policy re-ask",
            ),
            (8, "assistant", "Can I get your full name for the file?", "re_ask", "name re-ask"),
            (
                8,
                "assistant",
                "I'm afraid no adjuster visit can be scheduled this week.",
                "contradiction",
                "denies the scheduled call",
            ),
            (
                8,
                "assistant",
                "Could you tell me the other driver's plate number if you have it?",
                None,
                "new information",
            ),
            (
                8,
                "assistant",
                "Your claim number is CL-77120, keep it handy.",
                None,
                "repeats issued id",
            ),
        ],
    },
    {
        "id": "it-helpdesk",
        "messages": [
            ("user", "My laptop won't connect to the VPN. Employee ID is EMP-30418."),
            ("assistant", "Let me check. I see your VPN certificate expired yesterday."),
            ("user", "Can you renew it?"),
            (
                "assistant",
                "I've renewed the certificate and opened ticket INC-55021 to track it. Restart the VPN client.",
            ),
            ("user", "Restarted, still failing with error 809."),
            (
                "assistant",
                "Error 809 means the firewall blocks it. I will escalate this to the network team now.",
            ),
            ("user", "Ok, how long?"),
            ("assistant", "Usually within 4 hours. They'll update ticket INC-55021."),
        ],
        "variants": [
            (
                6,
                "assistant",
                "What's your employee ID so I can check your account?",
                "re_ask",
                "employee id re-ask",
            ),
            (9, "user", "Any update?", None, "user turn, nothing to flag"),
            (
                9,
                "assistant",
                "There's no escalation on this ticket, it's with me.",
                "contradiction",
                "denies the escalation",
            ),
            (
                9,
                "assistant",
                "I don't have your employee ID, could you send it?",
                "re_ask",
                "claims not to have it",
            ),
            (
                9,
                "assistant",
                "Could you tell me which VPN client version you run?",
                None,
                "new question",
            ),
        ],
    },
    {
        "id": "subscription-cancel",
        "messages": [
            ("user", "Please cancel my subscription, the email on it is sam.reyes@mailbox.org"),
            (
                "assistant",
                "I've found the Premium plan for sam.reyes@mailbox.org. Your subscription has been cancelled.",
            ),
            ("user", "Will I be charged again?"),
            ("assistant", "No further charges. You keep access until 12 June."),
            ("user", "And can I get a refund for this month? It renewed yesterday."),
            (
                "assistant",
                "Yes, since it renewed within 48 hours I've refunded $12.99 to your card.",
            ),
            ("user", "Thank you."),
        ],
        "variants": [
            (
                8,
                "assistant",
                "Sorry, which email address is the account under?",
                "re_ask",
                "email re-ask",
            ),
            (
                8,
                "assistant",
                "Refunds are not possible for monthly plans.",
                "contradiction",
                "denies refund",
            ),
            (
                8,
                "assistant",
                "Your refund of $9.99 will arrive in 3 days.",
                "contradiction",
                "another amount",
            ),
            (
                8,
                "assistant",
                "Is there a new email you would like receipts sent to?",
                None,
                "asks for a new email",
            ),
            (
                8,
                "assistant",
                "Your refund of $12.99 will arrive in 3 to 5 days.",
                None,
                "restates correctly",
            ),
        ],
    },
    {
        "id": "restaurant-booking",
        "messages": [
            ("user", "Hi, I'd like to book a table for 4 people on Friday at 19:30."),
            (
                "assistant",
                "Let me check Friday 19:30 for 4. That works. Can I have a name for the booking?",
            ),
            ("user", "Name is Priya Natarajan, phone 07700 900461."),
            ("assistant", "Thanks Priya, your booking is confirmed. Reference R-5521."),
            ("user", "Could we sit outside?"),
            ("assistant", "I've added a request for a terrace table; it depends on the weather."),
            ("user", "Lovely, thanks."),
        ],
        "variants": [
            (
                6,
                "assistant",
                "Of course. How many people will be joining you?",
                "re_ask",
                "party size re-ask",
            ),
            (6, "assistant", "Sure. What day would you like to come?", "re_ask", "day re-ask"),
            (
                8,
                "assistant",
                "I'm sorry, there is no booking under that name.",
                "contradiction",
                "denies the booking",
            ),
            (
                8,
                "assistant",
                "Would you also like to book for Saturday?",
                None,
                "offer, not denial",
            ),
            (8, "assistant", "See you Friday at 19:30, Priya!", None, "restates correctly"),
        ],
    },
    {
        "id": "airline-change",
        "messages": [
            (
                "user",
                "I need to change my flight. Booking reference is QX7P2L... sorry, it's QX7P2K.",
            ),
            ("assistant", "Thanks, I have booking QX7P2K, Lisbon to Berlin on 3 March."),
            ("user", "Can I move it to 5 March, same time?"),
            (
                "assistant",
                "Yes. I've changed your flight to 5 March at 10:40; the fare difference of €35 has been charged.",
            ),
            ("user", "Thanks. Can I add a bag?"),
            ("assistant", "I've added one 23 kg checked bag for €40."),
        ],
        "variants": [
            (
                7,
                "assistant",
                "For the bag receipt, I will send it to booking QX7P2L.",
                "contradiction",
                "uses the old booking reference",
            ),
            (7, "user", "And what's the total?", None, "user turn"),
            (
                7,
                "assistant",
                "Could you give me your booking reference again?",
                "re_ask",
                "asks for the reference",
            ),
            (
                7,
                "assistant",
                "Your booking QX7P2K now departs on 5 March at 10:40.",
                None,
                "correct value",
            ),
        ],
    },
    {
        "id": "pharmacy-refill",
        "messages": [
            (
                "user",
                "I'd like to refill my prescription. Date of birth 12/04/1986, my name is Ana Ruiz.",
            ),
            (
                "assistant",
                "Thanks Ana. I see the prescription for lisinopril 10 mg. I'll send the refill to your usual pharmacy.",
            ),
            ("user", "Can I pick it up today?"),
            ("assistant", "It will be ready after 4 pm today."),
            ("user", "Is it covered by my insurance?"),
            ("assistant", "Yes, your copay is $5."),
        ],
        "variants": [
            (
                7,
                "assistant",
                "To confirm your identity, what is your date of birth?",
                "re_ask",
                "DOB re-ask",
            ),
            (
                7,
                "assistant",
                "Could you tell me your insurance member ID?",
                None,
                "new information",
            ),
            (5, "assistant", "Please provide your full name.", "re_ask", "name re-ask"),
        ],
    },
    {
        "id": "utility-move",
        "messages": [
            (
                "user",
                "I'm moving out on the 28th. Account 9001-4477. Please stop the electricity then.",
            ),
            (
                "assistant",
                "Got it. I've scheduled the final meter reading and the stop for 28 June.",
            ),
            ("user", "Where will the final bill go? My new address is 14 Elm Road, Leeds LS6 2AB."),
            ("assistant", "The final bill will be sent to 14 Elm Road, Leeds LS6 2AB."),
            ("user", "Thanks."),
        ],
        "variants": [
            (
                6,
                "assistant",
                "Also, what is the account number for the new property?",
                None,
                "another account",
            ),
            (
                6,
                "assistant",
                "Sorry, I can't see any scheduled stop on this account.",
                "contradiction",
                "denies the scheduled stop",
            ),
            (
                6,
                "assistant",
                "Can you remind me of your account number?",
                "re_ask",
                "account re-ask",
            ),
        ],
    },
    {
        "id": "car-repair",
        "messages": [
            (
                "user",
                "My car's check-engine light is on. VIN 1HGCM82633A004352, it's a 2019 Civic.",
            ),
            ("assistant", "Thanks. I've booked you in for a diagnostic on Tuesday at 8 am."),
            ("user", "How much will it cost?"),
            ("assistant", "The diagnostic is $89, waived if you go ahead with the repair."),
            ("user", "Ok see you Tuesday."),
        ],
        "variants": [
            (6, "assistant", "Before Tuesday, can you give me the VIN?", "re_ask", "VIN re-ask"),
            (
                6,
                "assistant",
                "There's no appointment booked for you this week.",
                "contradiction",
                "denies the booking",
            ),
            (
                6,
                "assistant",
                "The diagnostic fee is $120.",
                "contradiction",
                "another price than the one quoted",
            ),
        ],
    },
    {
        "id": "trip-plan",
        "messages": [
            ("user", "Plan me a weekend in Porto."),
            (
                "assistant",
                "Here's a plan: Day 1, walk the Ribeira, cross the Dom Luis bridge and tour a port cellar in Gaia; dinner at a seafood place in Matosinhos. Day 2, Livraria Lello in the morning, the Serralves museum and garden after lunch, and sunset at the Jardim do Morro. I recommend staying near Aliados so everything is walkable.",
            ),
            ("user", "Also, I use a wheelchair and I don't drink alcohol."),
            (
                "assistant",
                "Great, thanks for telling me. Day 1: the riverside at Ribeira is flat and step-free; take the lower deck of the bridge by taxi, and instead of a port cellar visit the Alfandega museum, which is fully accessible. Day 2: Serralves has ramps and lifts; skip Livraria Lello, which has stairs. Stay near Trindade for step-free metro access.",
            ),
            ("user", "Perfect."),
        ],
        "variants": [
            (
                4,
                "assistant",
                "Here's a plan: Day 1, walk the Ribeira, cross the Dom Luis bridge and tour a port cellar in Gaia; dinner at a seafood place in Matosinhos. Day 2, Livraria Lello in the morning, the Serralves museum and garden after lunch, and sunset at the Jardim do Morro. I recommend staying near Aliados so everything is walkable.",
                "premature_commitment",
                "repeats the plan, ignoring the constraints",
            ),
        ],
    },
    {
        "id": "code-help",
        "messages": [
            ("user", "Write a Python function that removes duplicates from a list."),
            (
                "assistant",
                "Here is a simple version:\n```python\ndef dedupe(items):\n    return list(set(items))\n```\nIt converts the list to a set, which drops duplicates, and back to a list.",
            ),
            ("user", "It must keep the original order, and the items may be unhashable dicts."),
            (
                "assistant",
                "Good points. This keeps the order and works for unhashable items by comparing with a list of seen items:\n```python\ndef dedupe(items):\n    seen = []\n    out = []\n    for item in items:\n        if item not in seen:\n            seen.append(item)\n            out.append(item)\n    return out\n```\nIt is quadratic, which is fine for small lists.",
            ),
            ("user", "Thanks!"),
        ],
        "variants": [
            (
                4,
                "assistant",
                "Here is a simple version:\n```python\ndef dedupe(items):\n    return list(set(items))\n```\nIt converts the list to a set, which drops duplicates, and back to a list.",
                "premature_commitment",
                "same answer after the constraints",
            ),
        ],
    },
]
