"""The vocabulary of the demo catalog: a category tree, names, title and description
templates. Pure data; `generate.py` draws from it."""

# (top-level genre, fiction?, its subcategories separated by "|")
_TREE: tuple[tuple[str, bool, str], ...] = (
    ("Fiction", True, "Literary Fiction|Historical Fiction|Contemporary Fiction|Short Stories|"
     "Classics|Humorous Fiction"),
    ("Mystery & Thriller", True, "Crime Fiction|Detective Stories|Psychological Thrillers|"
     "Espionage|Cozy Mysteries"),
    ("Science Fiction & Fantasy", True, "Space Opera|Epic Fantasy|Dystopian Fiction|"
     "Urban Fantasy|Cyberpunk|Time Travel|Alternate History"),
    ("Romance", True, "Contemporary Romance|Historical Romance|Romantic Suspense|"
     "Paranormal Romance"),
    ("Science", False, "Physics|Biology|Chemistry|Astronomy|Earth Sciences|Mathematics|"
     "Neuroscience|Ecology"),
    ("History", False, "Ancient History|Medieval History|Modern History|Military History|"
     "World History|History of Science"),
    ("Biography & Memoir", False, "Memoirs|Political Biographies|Artists' Lives|"
     "Sports Biographies"),
    ("Business & Economics", False, "Management|Economics|Entrepreneurship|Personal Finance|"
     "Marketing"),
    ("Computers & Technology", False, "Programming|Databases|Networking|"
     "Artificial Intelligence|Security|Software Engineering|Distributed Systems"),
    ("Arts & Photography", False, "Painting|Photography|Architecture|Music|Design"),
    ("Travel & Food", False, "Travel Guides|Travel Writing|Cookbooks|Wine & Drinks"),
    # Last of the fiction genres: its books are the short ones.
    ("Children & Young Adult", True, "Picture Books|Middle Grade|Young Adult Fantasy|"
     "Coming of Age"),
)  # fmt: skip
CATEGORY_TREE: tuple[tuple[str, bool, tuple[str, ...]], ...] = tuple(
    (name, fiction, tuple(subs.split("|"))) for name, fiction, subs in _TREE
)

FIRST_NAMES = (
    "Aaron Abigail Adam Adrian Agnes Aiden Alan Albert Alexander Alexandra Alice Alicia Amara "
    "Amelia Amir Amy Ana Andrea Andrew Angela Anna Anne Anton Antonio Arthur Astrid Aurora "
    "Barbara Beatrice Ben Benjamin Bernard Beth Bianca Bruno Camila Carla Carlos Caroline Carmen "
    "Catherine Cecilia Charles Charlotte Chen Chloe Christian Christopher Claire Clara Colin "
    "Daniel Daniela David Deborah Diana Diego Dmitri Dominic Dorothy Edward Elena Eleanor Elias "
    "Elif Elizabeth Ella Emil Emily Emma Erik Esther Ethan Eva Evelyn Fatima Felix Fiona Frances "
    "Francesca Frank Freya Gabriel Gabriela George Grace Hannah Hans Harriet Harry Hassan Hazel "
    "Helen Henry Hugo Ian Ines Ingrid Irene Isaac Isabel Ivan Jack Jacob James Jane Javier "
    "Jennifer Jonas Jorge Joseph Julia Julian Karen Karim Kate Katherine Kenji Laura Lea Leo "
    "Leon Lily Linda Lucas Lucia Luis Lydia Madeleine Malik Margaret Maria Marie Mark Marta "
    "Martin Mary Matteo Maya Mei Michael Miguel Mila Miriam Nadia Naomi Nathan Nicholas Nina "
    "Noah Nora Olivia Omar Oscar Patricia Paul Paula Peter Philip Priya Rachel Rafael Rebecca "
    "Richard Robert Rosa Ruth Sakura Samuel Sara Sebastian Simon Sofia Sophie Stella Stephen "
    "Susan Sven Teresa Thomas Tobias Valentina Victor Victoria Vincent Walter William Yara "
    "Yusuf Zoe"
).split()

LAST_NAMES = (
    "Abbott Adams Aguilar Ahmed Alvarez Andersen Anderson Armstrong Ashworth Bailey Baker "
    "Baldwin Banerjee Barnes Bauer Becker Bell Bennett Bergstrom Bishop Blackwood Blake Bloom "
    "Bowen Bradley Brennan Brooks Brown Bryant Burke Byrne Caldwell Cameron Campbell Cardenas "
    "Carlsson Carter Castillo Chambers Chandler Chen Clarke Coleman Collins Conrad Cooper "
    "Costa Crawford Cruz Dalton Davies Delacroix Dixon Donovan Dubois Duncan Durand Eastwood "
    "Edwards Ellis Engel Evans Fairchild Falk Ferguson Fernandez Fischer Fitzgerald Fleming "
    "Fletcher Foster Fournier Fraser Friedman Fuentes Gallagher Garcia Gardner Garrison Gibson "
    "Gonzalez Graham Grant Gray Greene Griffin Gupta Hale Hamilton Hansen Harding Harper "
    "Harrington Hartmann Hayes Henderson Hoffmann Holloway Holmberg Howard Hughes Ibrahim "
    "Ingram Ishikawa Jansen Jensen Johansson Jordan Kaplan Kaur Keller Kennedy Khan Kimura "
    "Klein Knight Kowalski Kruger Lambert Lancaster Larsen Laurent Lawson Lefebvre Lehmann "
    "Lindqvist Lindgren Lopez Lorenz Lowell Lucero Maddox Marchetti Marin Marshall Martinez "
    "Mcallister Mckenzie Mendoza Mercer Meyer Mitchell Molina Montgomery Moreau Morgan Morrison "
    "Murphy Nakamura Navarro Nielsen Novak Nolan Oakley Okafor Olsen Ortega Osborne Owens "
    "Palmer Park Patel Pearson Perez Petersen Pham Pierce Porter Quinn Ramirez Ramos Reed "
    "Reyes Richter Rivera Robinson Rossi Russo Sandoval Santos Sato Schmidt Schneider Schubert "
    "Sharma Shaw Silva Sinclair Singh Sorensen Spencer Stafford Steiner Sterling Stewart Sullivan "
    "Suzuki Sutton Svensson Tanaka Taylor Thornton Torres Tran Turner Underwood Valdez Vance "
    "Vargas Vasquez Vogel Wagner Walker Wallace Warren Watanabe Weber Wells Whitaker Whitfield "
    "Wilkinson Winter Wolff Wright Yamamoto Young Zhang Zimmerman"
).split()

NATIONALITIES = (
    "American",
    "British",
    "Canadian",
    "Irish",
    "Australian",
    "French",
    "German",
    "Spanish",
    "Italian",
    "Swedish",
    "Norwegian",
    "Danish",
    "Dutch",
    "Japanese",
    "Indian",
    "Nigerian",
    "Mexican",
    "Brazilian",
    "Argentine",
    "Polish",
    "Korean",
    "Chinese",
    "South African",
)

ADJECTIVES = (
    "Silent Hidden Broken Golden Silver Crimson Forgotten Lost Distant Quiet Burning Frozen "
    "Wild Dark Bright Last First Secret Invisible Endless Hollow Ancient Restless Scarlet "
    "Northern Southern Eastern Western Midnight Morning Winter Summer Autumn Spring Bitter "
    "Sweet Gentle Fierce Crooked Shattered Painted Wandering Sleeping Drowned Electric Iron "
    "Glass Paper Velvet Stone Salt Copper Amber Emerald Violet Pale Radiant Lonely Fallen "
    "Rising Little Great Long Narrow Deep Strange Curious Impossible Unfinished Borrowed Stolen "
    "Quantum Infinite Hungry Savage Tender Wicked Gilded Empty Open Secondhand Perfect Final"
).split()

NOUNS = (
    "River Garden House Mountain Ocean Forest City Island Bridge Tower Road Harbor Valley Desert "
    "Storm Shadow Light Fire Water Mirror Window Door Key Letter Map Clock Song Voice Dream "
    "Memory Promise Secret Crown Sword Throne Empire Kingdom Republic Revolution War Peace "
    "Winter Summer Night Morning Star Moon Sun Sky Sea Lake Field Orchard Station Train Ship "
    "Lantern Compass Library Museum Archive Atlas Journey Voyage Return Exile Inheritance "
    "Daughter Son Mother Father Sister Brother Stranger Witness Thief Spy Detective Doctor "
    "Gardener Painter Astronomer Cartographer Orphan Widow Queen King Prince Soldier Pilgrim "
    "Glass Salt Iron Silk Paper Bone Ash Dust Snow Rain Wind Thunder Tide Wave Horizon Border "
    "Frontier Machine Engine Signal Code Algorithm Network Circuit Atom Cell Gene Planet Galaxy "
    "Comet Orbit Equation Theory Experiment Silence Echo Whisper Fever Hunger Harvest Feast "
    "Wedding Funeral Festival Carnival Market Kitchen Table Bread Wine Honey Coffee Tea Sugar"
).split()

PLACES = (
    "Venice Paris London Kyoto Lisbon Prague Vienna Cairo Istanbul Havana Berlin Dublin Oslo "
    "Marrakesh Tangier Alexandria Samarkand Patagonia Provence Tuscany Andalusia Bengal "
    "Siberia Manhattan Brooklyn Chicago Montreal Edinburgh Cornwall Yorkshire Normandy "
    "Bavaria Sicily Crete Athens Rome Babylon Troy Carthage Byzantium Atlantis Avalon Arcadia"
).split()

# Nonfiction subjects, and the words their titles and descriptions are built from.
TOPICS = (
    "Time Light Gravity Energy Matter Money Power Memory Language Numbers Infinity Chaos "
    "Evolution Genes Cells Oceans Climate Weather Forests Rivers Mountains Cities Empires "
    "Trade Silk Salt Spices Sugar Coffee Bread Wine Maps Ships Railways Clocks Glass Iron Steel "
    "Paper Printing Medicine Plagues Vaccines Surgery Sleep Dreams Music Painting Photography "
    "Architecture Gardens Design Cooking Leadership Strategy Markets Banking Inflation Startups "
    "Negotiation Habits Happiness Creativity Attention Algorithms Databases Networks Compilers "
    "Cryptography Robots Computers Software Data Intelligence Statistics Probability Geometry "
    "Calculus Stars Planets Galaxies Atoms Quarks Chemistry Volcanoes Earthquakes Ice Deserts"
).split()

FICTION_TITLES = (
    "The {adj} {noun}",
    "The {adj} {noun}",
    "The {noun} of {place}",
    "A {noun} in {place}",
    "The {noun}'s {noun2}",
    "{adj} {noun}",
    "The Last {noun} of {place}",
    "{noun} and {noun2}",
    "The {noun} at the Edge of the {noun2}",
    "Where the {noun} Sleeps",
    "Daughter of the {adj} {noun}",
    "The {adj} {noun} of {place}",
    "Beneath the {adj} {noun}",
    "A {noun} of {noun2} and {noun3}",
)

NONFICTION_TITLES = (
    "A History of {topic}",
    "A Brief History of {topic}",
    "The Science of {topic}",
    "Understanding {topic}",
    "On {topic}",
    "The Age of {topic}",
    "{topic} and {topic2}",
    "The {adj} History of {topic}",
    "How {topic} Made the Modern World",
    "The Secret Life of {topic}",
    "{topic}: A Practical Guide",
    "The Little Book of {topic}",
    "Thinking About {topic}",
    "The Hidden World of {topic}",
)

SUBTITLES = (
    "A Novel",
    "A Novel",
    "Stories",
    "A Memoir",
    "A Journey Through {topic} and {topic2}",
    "The Untold Story of {topic}",
    "How {topic} Shaped Our World",
    "Lessons from {place}",
    "An Introduction",
    "A Field Guide",
    "Book {n} of the {adj} {noun} Trilogy",
    "The {adj} Years",
    "Essays on {topic} and {topic2}",
)

FICTION_SENTENCES = (
    "A {adj2} story of {noun_l} and {noun2_l}, set in {place}.",
    "When a {person} discovers a {adj2} {noun_l}, nothing in {place} stays the same.",
    "In this {adj2} novel, a {person} returns to {place} to face the {noun_l} of the past.",
    "A {adj2} tale of {topic_l}, loss and the {noun_l} we keep.",
    "Between the {noun_l} and the {noun2_l}, a {person} must choose what to save.",
    "Told in {adj2} prose, it follows a {person} across {place} and beyond.",
    "Nothing is what it seems in this {adj2} story of {topic_l} and betrayal.",
    "A family, a {noun_l} and a {adj2} secret that spans three generations.",
)

NONFICTION_SENTENCES = (
    "A {adj2} account of how {topic_l} changed the way we live.",
    "From {place} to the present day, this book traces the story of {topic_l}.",
    "Drawing on new research, the author explains {topic_l} and {topic2_l} for every reader.",
    "An accessible, {adj2} introduction to {topic_l}.",
    "Part history, part science, it shows why {topic_l} matters more than ever.",
    "A {adj2} guide to {topic_l}, with practical lessons on {topic2_l}.",
    "The surprising story of {topic_l}, told through the lives of the people who shaped it.",
    "Essential reading on {topic_l}, {topic2_l} and the {noun_l} that connects them.",
)

DESCRIPTION_ADJECTIVES = (
    "gripping",
    "luminous",
    "haunting",
    "sweeping",
    "witty",
    "tender",
    "brilliant",
    "unforgettable",
    "lyrical",
    "powerful",
    "fascinating",
    "dark",
    "thoughtful",
    "vivid",
    "compelling",
    "ambitious",
    "moving",
    "clear",
    "lively",
    "definitive",
)

PERSONS = (
    "young woman",
    "retired detective",
    "grieving widow",
    "young scientist",
    "reluctant heir",
    "disgraced journalist",
    "ship's doctor",
    "lonely cartographer",
    "former soldier",
    "street musician",
    "village teacher",
    "museum curator",
    "runaway prince",
    "junior lawyer",
)

PUBLISHER_PATTERNS = (
    "{adj} {noun} Press",
    "{last} & {last2}",
    "{noun} House",
    "{last} Books",
    "{place} University Press",
    "{adj} {noun} Publishing",
    "{noun}light Editions",
    "{last}, {last2} & Sons",
    "The {noun} Press",
    "{place} Books",
    "{adj} Harbor Publishers",
    "{last} Publishing Group",
)

REVIEW_TITLES: dict[int, tuple[str, ...]] = {
    1: ("Not for me", "Disappointing", "Could not finish it", "A waste of time"),
    2: ("Uneven", "Had high hopes", "Slow going", "Some good ideas, poorly done"),
    3: ("Decent read", "Good, not great", "Worth a look", "Mixed feelings"),
    4: ("Really enjoyed it", "Very good", "Recommended", "A solid read"),
    5: ("Loved it!", "A masterpiece", "Could not put it down", "Five stars", "Brilliant"),
}

REVIEW_CONTENT: dict[int, tuple[str, ...]] = {
    1: (
        "The premise was promising but the execution fell flat.",
        "I found it hard to care about any of it.",
    ),
    2: (
        "A few strong chapters, but it drags in the middle.",
        "The writing is fine; the story did not hold my attention.",
    ),
    3: (
        "Enjoyable enough, though I expected more from the ending.",
        "Some parts are excellent, others feel rushed.",
    ),
    4: (
        "Well written and thoughtful. I would read more by this author.",
        "Engaging from start to finish, with a couple of slow patches.",
    ),
    5: (
        "One of the best books I have read this year.",
        "Beautifully written, I recommended it to all my friends.",
        "I read it in one sitting and will read it again.",
    ),
}
